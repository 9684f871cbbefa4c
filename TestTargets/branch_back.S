/* branch_back: int loop_into_head(int n) returns 1 + 2 + … + n for n >= 1 (55 for n = 10; n itself for n <= 0).
 * Its loop branches back to loop_into_head+2, inside the first 5 bytes, so no jump patch may
 * overwrite the head (a patch would cut the loop's target in half).
 *   +0  31 c0        xor  %eax,%eax
 *   +2  01 f8        add  %edi,%eax      <- loop target (offset 2)
 *   +4  83 ef 01     sub  $1,%edi
 *   +7  7f f9        jg   +2
 *   +9  …            an identity computation on %eax so the function is >= 32 bytes         */
    .text
    .globl loop_into_head
    .type loop_into_head, @function
    .p2align 4
loop_into_head:
    xorl %eax, %eax
.Lloop:
    addl %edi, %eax
    subl $1, %edi
    jg .Lloop
    movl %eax, %edx
    leal (%rdx,%rdx,2), %eax      /* eax = 3 * sum */
    subl %edx, %eax               /* eax = 2 * sum */
    subl %edx, %eax               /* eax = sum */
    xorl %ecx, %ecx
    orl %ecx, %eax
    imull $1, %eax, %eax
    addl $0, %eax
    negl %eax
    negl %eax
    ret
    .size loop_into_head, .-loop_into_head
    .section .note.GNU-stack,"",@progbits
