/* hook_tail: a tail call between two hookable functions (what gcc -O2 makes of
 * `long hook_outer(long x) { return hook_inner(x + 1); }`).
 * hook_outer: lea 1(%rdi),%rdi; jmp hook_inner   -- no frame, no ret of its own
 * hook_inner: push %rbp; mov %rsp,%rbp; lea 1(%rdi,%rdi,2),%rax; pop %rbp; ret   -- 3x + 1
 * so hook_outer(x) = 3(x + 1) + 1 = 3x + 4, and both functions "return" at hook_inner's ret. */
    .text
    .globl hook_inner
    .type hook_inner, @function
hook_inner:
    push %rbp
    mov %rsp, %rbp
    lea 1(%rdi,%rdi,2), %rax
    pop %rbp
    ret
    .size hook_inner, .-hook_inner

    .globl hook_outer
    .type hook_outer, @function
hook_outer:
    lea 1(%rdi), %rdi
    jmp hook_inner
    .size hook_outer, .-hook_outer
    .section .note.GNU-stack,"",@progbits
