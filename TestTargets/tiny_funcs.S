/* tiny_funcs: functions shorter than any jump patch (5 or 14 bytes). Sizes are exact (.size). Each is
 * 16-byte aligned; the padding after it is int3 so a patch that overruns st_size is visible.
 *   tiny_ret  1 byte  c3                    (void)
 *   tiny_xor  3 bytes 31 c0 c3              returns 0
 *   tiny_four 4 bytes 6a 07 58 c3           push 7; pop rax; ret -> returns 7
 *   tiny_six  6 bytes b8 05 00 00 00 c3     returns 5                                           */
    .text

    .globl tiny_ret
    .type tiny_ret, @function
    .p2align 4, 0xcc
tiny_ret:
    ret
    .size tiny_ret, .-tiny_ret

    .globl tiny_xor
    .type tiny_xor, @function
    .p2align 4, 0xcc
tiny_xor:
    xorl %eax, %eax
    ret
    .size tiny_xor, .-tiny_xor

    .globl tiny_four
    .type tiny_four, @function
    .p2align 4, 0xcc
tiny_four:
    pushq $7
    popq %rax
    ret
    .size tiny_four, .-tiny_four

    .globl tiny_six
    .type tiny_six, @function
    .p2align 4, 0xcc
tiny_six:
    movl $5, %eax
    ret
    .size tiny_six, .-tiny_six

    .p2align 4, 0xcc
    .section .note.GNU-stack,"",@progbits
