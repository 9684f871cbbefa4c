/* hook_shapes: one function per FIRST-instruction shape a hook must displace (emulate or run out of
 * line). Each takes int x (in %edi) and returns x + k. Exact .size, CFI for unwinders, 16-byte
 * alignment with int3 padding. First bytes (verified with objdump -d, see README.md):
 *   shape_endbr    k=1  f3 0f 1e fa           endbr64            then push %rbp; mov %rsp,%rbp
 *   shape_push     k=2  55                    push %rbp          then mov %rsp,%rbp
 *   shape_riprel   k=3  8b 05 rel32           mov shape_riprel_addend(%rip),%eax   (the global = 3)
 *   shape_sub_rsp  k=4  48 83 ec 18           sub $0x18,%rsp
 *   shape_jmp      k=6  eb 03                 jmp rel8 over 3 int3 bytes to the body
 *   shape_call     k=7  e8 rel32              call shape_call_helper (returns 7); return address
 *                                             shape_call+5
 *   shape_jmp32    k=8  e9 03 00 00 00        jmp rel32 over 3 int3 bytes to the body
 * (k=5 is labs, called through the PLT by hook_shapes_main.c.)                                   */
    .data
    .globl shape_riprel_addend
    .type shape_riprel_addend, @object
    .p2align 2
shape_riprel_addend:
    .long 3
    .size shape_riprel_addend, 4

    .text

    .globl shape_endbr
    .type shape_endbr, @function
    .p2align 4, 0xcc
shape_endbr:
    .cfi_startproc
    endbr64
    pushq %rbp
    .cfi_def_cfa_offset 16
    .cfi_offset %rbp, -16
    movq %rsp, %rbp
    .cfi_def_cfa_register %rbp
    leal 1(%rdi), %eax
    popq %rbp
    .cfi_def_cfa %rsp, 8
    ret
    .cfi_endproc
    .size shape_endbr, .-shape_endbr

    .globl shape_push
    .type shape_push, @function
    .p2align 4, 0xcc
shape_push:
    .cfi_startproc
    pushq %rbp
    .cfi_def_cfa_offset 16
    .cfi_offset %rbp, -16
    movq %rsp, %rbp
    .cfi_def_cfa_register %rbp
    leal 2(%rdi), %eax
    popq %rbp
    .cfi_def_cfa %rsp, 8
    ret
    .cfi_endproc
    .size shape_push, .-shape_push

    .globl shape_riprel
    .type shape_riprel, @function
    .p2align 4, 0xcc
shape_riprel:
    .cfi_startproc
    movl shape_riprel_addend(%rip), %eax
    addl %edi, %eax
    ret
    .cfi_endproc
    .size shape_riprel, .-shape_riprel

    .globl shape_sub_rsp
    .type shape_sub_rsp, @function
    .p2align 4, 0xcc
shape_sub_rsp:
    .cfi_startproc
    subq $0x18, %rsp
    .cfi_def_cfa_offset 32
    movl %edi, 8(%rsp)
    movl 8(%rsp), %eax
    addl $4, %eax
    addq $0x18, %rsp
    .cfi_def_cfa_offset 8
    ret
    .cfi_endproc
    .size shape_sub_rsp, .-shape_sub_rsp

    .globl shape_jmp
    .type shape_jmp, @function
    .p2align 4, 0xcc
shape_jmp:
    .cfi_startproc
    jmp 1f
    int3                     /* never executed: a hook that falls through instead of jumping traps */
    int3
    int3
1:  leal 6(%rdi), %eax
    ret
    .cfi_endproc
    .size shape_jmp, .-shape_jmp

    .globl shape_call_helper
    .type shape_call_helper, @function
    .p2align 4, 0xcc
shape_call_helper:
    .cfi_startproc
    movl $7, %eax
    ret
    .cfi_endproc
    .size shape_call_helper, .-shape_call_helper

    .globl shape_call
    .type shape_call, @function
    .p2align 4, 0xcc
shape_call:
    .cfi_startproc
    call shape_call_helper   /* enters the helper with %rsp 16n: fine, it touches no stack */
    addl %edi, %eax
    ret
    .cfi_endproc
    .size shape_call, .-shape_call

    .globl shape_jmp32
    .type shape_jmp32, @function
    .p2align 4, 0xcc
shape_jmp32:
    .cfi_startproc
    {disp32} jmp 1f          /* force the rel32 form (gas would pick rel8) */
    int3
    int3
    int3
1:  leal 8(%rdi), %eax
    ret
    .cfi_endproc
    .size shape_jmp32, .-shape_jmp32

    .p2align 4, 0xcc
    .section .note.GNU-stack,"",@progbits
