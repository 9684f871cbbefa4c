/* call_in_head: int call_head(int (*callee)(void)) returns callee() + 100.
 *   +0  ff d7        call *%rdi        <- return address is call_head+2, inside the first 5 bytes
 *   +2  …            identity work on %eax, then add $100, ret (size >= 16)
 * call_head keeps no frame: the callee is entered with %rsp 16-byte aligned instead of the ABI's
 * 16n+8, so C callees must realign (force_align_arg_pointer).                                     */
    .text
    .globl call_head
    .type call_head, @function
    .p2align 4
call_head:
    call *%rdi
    movl %eax, %edx
    xorl %ecx, %ecx
    leal (%rdx,%rcx,1), %eax
    imull $1, %eax, %eax
    addl $100, %eax
    ret
    .size call_head, .-call_head
    .section .note.GNU-stack,"",@progbits
