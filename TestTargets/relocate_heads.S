/* relocate_heads: functions whose first instructions are each a form X86Relocator rewrites when
 * graft moves them into a trampoline (patch --library with graft_original_<to>). Every function
 * takes an int in %edi and returns an int; each is longer than a 14-byte `jmp [rip+0]` patch, and
 * the interesting instruction sits in its first bytes. relocate_heads_main.c prints their results;
 * librelocate.c's replacements return the original's result + 1000 through the trampoline.
 *   h_rip_load(x)  = 42 + x        mov eax, [rip+...] first
 *   h_rip_lea(x)   = 7 + x         lea rax, [rip+...] first
 *   h_jcc(x)       = x<0 ? -1 : 2x js rel8 (to beyond the moved bytes) second
 *   h_jmp8(x)      = x + 3         jmp rel8 first
 *   h_jmp32(x)     = x + 4         jmp rel32 first
 *   h_call(x)      = x + 5         call rel32 first (returns into the trampoline)
 *   h_endbr(x)     = 3x            endbr64, then the rest (the patch goes after endbr64)          */
    .intel_syntax noprefix
    .section .rodata
    .p2align 2
value42: .long 42
table:   .long 1, 7, 9
    .text

    .globl h_rip_load
    .type h_rip_load, @function
    .p2align 4
h_rip_load:
    mov eax, dword ptr [rip + value42]
    add eax, edi
    mov edx, eax
    xor ecx, ecx
    add edx, ecx
    mov eax, edx
    ret
    .size h_rip_load, .-h_rip_load

    .globl h_rip_lea
    .type h_rip_lea, @function
    .p2align 4
h_rip_lea:
    lea rax, [rip + table]
    mov eax, dword ptr [rax + 4]
    add eax, edi
    xor ecx, ecx
    add eax, ecx
    ret
    .size h_rip_lea, .-h_rip_lea

    .globl h_jcc
    .type h_jcc, @function
    .p2align 4
h_jcc:
    test edi, edi
    js 1f
    lea eax, [rdi + rdi]
    xor ecx, ecx
    add eax, ecx
    add eax, ecx
    add eax, ecx
    ret
1:  mov eax, -1
    ret
    .size h_jcc, .-h_jcc

    .globl h_jmp8
    .type h_jmp8, @function
    .p2align 4
h_jmp8:
    jmp 1f
    nop dword ptr [rax + rax + 0]
    nop dword ptr [rax + rax + 0]
    nop dword ptr [rax + rax + 0]
    nop dword ptr [rax + rax + 0]
1:  lea eax, [rdi + 3]
    ret
    .size h_jmp8, .-h_jmp8

    .globl h_jmp32
    .type h_jmp32, @function
    .p2align 4
h_jmp32:
    jmp.d32 1f
    nop dword ptr [rax + rax + 0]
    nop dword ptr [rax + rax + 0]
    nop dword ptr [rax + rax + 0]
1:  lea eax, [rdi + 4]
    ret
    .size h_jmp32, .-h_jmp32

    .type five, @function
five:
    mov eax, 5
    ret
    .size five, .-five

    .globl h_call
    .type h_call, @function
    .p2align 4
h_call:
    call five
    add eax, edi
    xor ecx, ecx
    add eax, ecx
    add eax, ecx
    add eax, ecx
    ret
    .size h_call, .-h_call

    .globl h_endbr
    .type h_endbr, @function
    .p2align 4
h_endbr:
    endbr64
    lea eax, [rdi + rdi*2]
    xor ecx, ecx
    add eax, ecx
    add eax, ecx
    add eax, ecx
    ret
    .size h_endbr, .-h_endbr
    .section .note.GNU-stack,"",@progbits
