/* trace_calls: functions with exact, known instruction counts for the single-step trace tests.
 * Every function has the standard frame (push %rbp; mov %rsp,%rbp … pop %rbp; ret), CFI, exact
 * .size, 16-byte alignment with int3 padding; no tail calls. The only conditional branches are
 * trace_a's counted loop (always 10 iterations) and trace_fact's recursion test.
 *
 *   long trace_leaf(long x) = 3x + 1                      6 instructions
 *   long trace_b(long x)    = trace_leaf(x) + x = 4x + 1  11 instructions of its own, 1 call
 *   long trace_sys(void)    = getpid() > 0 (1)            9 instructions, the 4th is `syscall`
 *                                                          (getpid, eax = 39): one instruction
 *   long trace_a(long k)    = trace_b(k) + trace_b(k+1) + trace_b(k+2) + trace_sys()
 *                             + (10 + 9 + … + 1)  =  12k + 71   (k = 1: 83, k = 2: 95, k = 3: 107)
 *                             53 instructions of its own: 6 prologue, 3 × 3 around the trace_b calls,
 *                             2 around the trace_sys call, 1 loop setup, 10 × 3 loop body, 5 epilogue
 *   long trace_fact(long n) = n!  (n <= 0: 1), recursing n, n-1, … 0
 *                             15 instructions per call with n > 0, 12 for the last (n <= 0)
 *
 * ONE call of trace_a, counted from its first instruction to its `ret` inclusive (a `call` counts in
 * the caller, the callee's `ret` in the callee):
 *   function     calls  self instructions (summed over its calls)
 *   trace_a        1     53
 *   trace_b        3     33   (3 × 11)
 *   trace_leaf     3     18   (3 × 6)
 *   trace_sys      1      9   (1 syscall among them)
 *   total               113   (53 + 33 + 18 + 9)
 * ONE outer call of trace_fact(n): n + 1 calls of trace_fact, 15n + 12 instructions in all
 *   (n = 5: 6 calls, 87 instructions, result 120).
 * Checked with gdb stepi: TestTargets/trace_reference.py (README.md gives its output).         */

    .text

    .globl trace_leaf
    .type trace_leaf, @function
    .p2align 4, 0xcc
trace_leaf:
    .cfi_startproc
    pushq %rbp                      /* 1 */
    .cfi_def_cfa_offset 16
    .cfi_offset %rbp, -16
    movq %rsp, %rbp                 /* 2 */
    .cfi_def_cfa_register %rbp
    leaq (%rdi,%rdi,2), %rax        /* 3  rax = 3x */
    addq $1, %rax                   /* 4  rax = 3x + 1 */
    popq %rbp                       /* 5 */
    .cfi_def_cfa %rsp, 8
    ret                             /* 6 */
    .cfi_endproc
    .size trace_leaf, .-trace_leaf

    .globl trace_b
    .type trace_b, @function
    .p2align 4, 0xcc
trace_b:
    .cfi_startproc
    pushq %rbp                      /* 1 */
    .cfi_def_cfa_offset 16
    .cfi_offset %rbp, -16
    movq %rsp, %rbp                 /* 2 */
    .cfi_def_cfa_register %rbp
    pushq %rbx                      /* 3 */
    .cfi_offset %rbx, -24
    subq $8, %rsp                   /* 4  keeps %rsp 16-byte aligned at the call */
    movq %rdi, %rbx                 /* 5  x */
    call trace_leaf                 /* 6  rax = 3x + 1 */
    addq %rbx, %rax                 /* 7  rax = 4x + 1 (work after the call: no tail call) */
    addq $8, %rsp                   /* 8 */
    popq %rbx                       /* 9 */
    popq %rbp                       /* 10 */
    .cfi_def_cfa %rsp, 8
    ret                             /* 11 */
    .cfi_endproc
    .size trace_b, .-trace_b

    .globl trace_sys
    .type trace_sys, @function
    .p2align 4, 0xcc
trace_sys:
    .cfi_startproc
    pushq %rbp                      /* 1 */
    .cfi_def_cfa_offset 16
    .cfi_offset %rbp, -16
    movq %rsp, %rbp                 /* 2 */
    .cfi_def_cfa_register %rbp
    movl $39, %eax                  /* 3  __NR_getpid */
    syscall                         /* 4  clobbers rcx, r11 */
    testl %eax, %eax                /* 5 */
    setg %al                        /* 6  pid > 0 */
    movzbl %al, %eax                /* 7  rax = 1 */
    popq %rbp                       /* 8 */
    .cfi_def_cfa %rsp, 8
    ret                             /* 9 */
    .cfi_endproc
    .size trace_sys, .-trace_sys

    .globl trace_a
    .type trace_a, @function
    .p2align 4, 0xcc
trace_a:
    .cfi_startproc
    pushq %rbp                      /* 1 */
    .cfi_def_cfa_offset 16
    .cfi_offset %rbp, -16
    movq %rsp, %rbp                 /* 2 */
    .cfi_def_cfa_register %rbp
    pushq %rbx                      /* 3 */
    .cfi_offset %rbx, -24
    pushq %r12                      /* 4 */
    .cfi_offset %r12, -32
    movq %rdi, %rbx                 /* 5  k */
    xorl %r12d, %r12d               /* 6  sum = 0 */
    movq %rbx, %rdi                 /* 7 */
    call trace_b                    /* 8  4k + 1 */
    addq %rax, %r12                 /* 9 */
    leaq 1(%rbx), %rdi              /* 10 */
    call trace_b                    /* 11 4k + 5 */
    addq %rax, %r12                 /* 12 */
    leaq 2(%rbx), %rdi              /* 13 */
    call trace_b                    /* 14 4k + 9 */
    addq %rax, %r12                 /* 15 */
    call trace_sys                  /* 16 1 */
    addq %rax, %r12                 /* 17 */
    movl $10, %ecx                  /* 18 */
.Ltrace_a_loop:                     /* 10 iterations, 3 instructions each: 30 */
    addq %rcx, %r12                 /*    sum += 10, 9, … 1 */
    subl $1, %ecx
    jnz .Ltrace_a_loop              /*    taken 9 times, falls through once */
    movq %r12, %rax                 /* 49 */
    popq %r12                       /* 50 */
    popq %rbx                       /* 51 */
    popq %rbp                       /* 52 */
    .cfi_def_cfa %rsp, 8
    ret                             /* 53 */
    .cfi_endproc
    .size trace_a, .-trace_a

    .globl trace_fact
    .type trace_fact, @function
    .p2align 4, 0xcc
trace_fact:
    .cfi_startproc
    pushq %rbp                      /* 1 */
    .cfi_def_cfa_offset 16
    .cfi_offset %rbp, -16
    movq %rsp, %rbp                 /* 2 */
    .cfi_def_cfa_register %rbp
    pushq %rbx                      /* 3 */
    .cfi_offset %rbx, -24
    subq $8, %rsp                   /* 4 */
    movq %rdi, %rbx                 /* 5  n */
    movl $1, %eax                   /* 6 */
    testq %rdi, %rdi                /* 7 */
    jle .Ltrace_fact_done           /* 8  taken only when n <= 0 */
    leaq -1(%rdi), %rdi             /* 9 */
    call trace_fact                 /* 10 (n-1)! */
    imulq %rbx, %rax                /* 11 n * (n-1)! */
.Ltrace_fact_done:
    addq $8, %rsp                   /* 12 (9 when n <= 0) */
    popq %rbx                       /* 13 */
    popq %rbp                       /* 14 */
    .cfi_def_cfa %rsp, 8
    ret                             /* 15 (12 when n <= 0) */
    .cfi_endproc
    .size trace_fact, .-trace_fact

    .p2align 4, 0xcc

/* long trace_rep(void): copies 64 bytes with one `rep movsb` and returns 64. 10 instructions per
 * call, the rep movsb counted once although single-stepping stops after each of its 64 iterations. */
    .globl trace_rep
    .type trace_rep, @function
trace_rep:
    .cfi_startproc
    pushq %rbp                      /* 1 */
    .cfi_def_cfa_offset 16
    .cfi_offset %rbp, -16
    movq %rsp, %rbp                 /* 2 */
    .cfi_def_cfa_register %rbp
    subq $128, %rsp                 /* 3 */
    leaq (%rsp), %rdi               /* 4 destination */
    leaq 64(%rsp), %rsi             /* 5 source */
    movl $64, %ecx                  /* 6 */
    rep movsb                       /* 7: 64 iterations */
    movl $64, %eax                  /* 8 */
    leave                           /* 9 */
    .cfi_def_cfa %rsp, 8
    ret                             /* 10 */
    .cfi_endproc
    .size trace_rep, .-trace_rep

    .p2align 4, 0xcc
    .section .note.GNU-stack,"",@progbits
