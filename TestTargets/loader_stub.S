# The loader thread's start routine (GraftKit/LoaderThread.swift, `LoaderThread.stub`): start(block)
# stores its thread id (gettid), detaches itself (pthread_detach(pthread_self())), calls
# block.fn(block.arg0, block.arg1), stores the result,
# copies dlerror()'s message into the block and sets the done flag. LoaderStubTests assembles this
# file and compares the bytes with the Swift array. Offsets: see LoaderThread.Block.
    .intel_syntax noprefix
    .text
    .globl start
start:
    push rbx
    mov rbx, rdi
    mov eax, 186
    syscall
    mov [rbx+80], eax
    mov rax, [rbx+32]
    test rax, rax
    jz 1f
    call [rbx+40]
    mov rdi, rax
    call [rbx+32]
1:
    mov rdi, [rbx+8]
    mov rsi, [rbx+16]
    call [rbx+0]
    mov [rbx+48], rax
    mov rax, [rbx+24]
    test rax, rax
    jz 3f
    call rax
    mov [rbx+56], rax
    test rax, rax
    jz 3f
    mov rsi, rax
    lea rdi, [rbx+128]
    mov ecx, 1023
2:
    mov al, [rsi]
    mov [rdi], al
    test al, al
    jz 3f
    inc rsi
    inc rdi
    dec ecx
    jnz 2b
    mov byte ptr [rdi], 0
3:
    mov dword ptr [rbx+64], 1
    xor eax, eax
    pop rbx
    ret
