/* rip_relative: int rip_first(void) whose FIRST instruction is a RIP-relative load
 *   +0  8b 05 xx xx xx xx   mov counter(%rip),%eax
 * then returns counter + 1 (42 with counter's initial 41). `counter` is a global int in .data, so a
 * test may also change it in memory. Code displaced from the head must have its rel32 fixed.      */
    .data
    .globl counter
    .type counter, @object
    .p2align 2
counter:
    .long 41
    .size counter, 4

    .text
    .globl rip_first
    .type rip_first, @function
    .p2align 4
rip_first:
    movl counter(%rip), %eax
    movl %eax, %edx
    addl $1, %edx
    xorl %ecx, %ecx
    leal (%rdx,%rcx,1), %eax
    imull $1, %eax, %eax
    ret
    .size rip_first, .-rip_first
    .section .note.GNU-stack,"",@progbits
