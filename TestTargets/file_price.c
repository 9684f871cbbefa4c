/* file_price: the victim of `graft patch --file` (patching a program file, not a process), built
 * static for x86_64, i386, ARM (A32), Thumb-2 and AArch64 (TestTargets/Makefile: file_price_*).
 *
 * It prints `price 100` (price(1)) and exits. Tests patch the file's price to cheap (`price 7`) or to
 * `--return N` (`price N`), run it natively or under qemu-arm / qemu-aarch64, and compare the output.
 * The Thumb build also prints `even 100` and `odd 100` from thumb_even and thumb_odd, Thumb functions
 * placed at 0 and 2 mod 4 (a jump at 2 mod 4 needs a nop first so its literal word is aligned).
 *
 * ARM builds also have cheap_other (8 * quantity) in the other instruction set (Thumb in the A32
 * build, A32 in the Thumb build), for jumps that switch state.
 *
 * The refusals, one purpose-built function each (assembly, so their bytes are exact on every
 * architecture):
 *   too_short    a lone return: shorter than any jump graft writes there
 *   pool_head    a literal pool word inside the bytes a jump would overwrite, read by a pc-relative
 *                load in the function (x86_64: rip-relative; i386 has no pc-relative loads, and its
 *                pool_head is an ordinary function)
 *   branch_into  a loop whose backward branch lands inside the bytes a jump would overwrite
 *
 * `file_price_x86_64 wait` prints `ready` and waits for stdin to close: a running program, for the
 * --in-place refusal. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

__attribute__((noinline)) int price(int quantity) {
    /* volatile: the body stays long enough for every jump (16 bytes on AArch64) and has no literal
     * pool, no branch. */
    volatile int unit = 40;
    volatile int fee = 60;
    return quantity * unit + fee;
}

__attribute__((noinline)) int cheap(int quantity) {
    return 7 * quantity;
}

#if defined(__arm__)
/* The other ARM instruction set than the build's: a jump there must switch state (interworking:
 * the jump's literal carries bit 0 for Thumb, not for A32). */
#if defined(__thumb__)
__attribute__((noinline, target("arm"))) int cheap_other(int quantity) { return 8 * quantity; }
#else
__attribute__((noinline, target("thumb"))) int cheap_other(int quantity) { return 8 * quantity; }
#endif
#endif

int too_short(void);
int pool_head(void);
int branch_into(void);

#if defined(__x86_64__)
__asm__(".text\n"
        ".globl too_short\n.type too_short, @function\ntoo_short:\n"
        "  xor %eax, %eax\n  ret\n.size too_short, .-too_short\n"
        ".globl pool_head\n.type pool_head, @function\npool_head:\n"
        "  jmp 2f\n1: .long 42\n2: mov 1b(%rip), %eax\n  ret\n.size pool_head, .-pool_head\n"
        ".globl branch_into\n.type branch_into, @function\nbranch_into:\n"
        "  xor %eax, %eax\n1: inc %eax\n  cmp $3, %eax\n  jl 1b\n  ret\n.size branch_into, .-branch_into\n");
#elif defined(__i386__)
__asm__(".text\n"
        ".globl too_short\n.type too_short, @function\ntoo_short:\n"
        "  xor %eax, %eax\n  ret\n.size too_short, .-too_short\n"
        ".globl pool_head\n.type pool_head, @function\npool_head:\n"
        "  mov $42, %eax\n  ret\n.size pool_head, .-pool_head\n"
        ".globl branch_into\n.type branch_into, @function\nbranch_into:\n"
        "  xor %eax, %eax\n1: inc %eax\n  cmp $3, %eax\n  jl 1b\n  ret\n.size branch_into, .-branch_into\n");
#elif defined(__aarch64__)
__asm__(".text\n.balign 8\n"
        ".globl too_short\n.type too_short, %function\ntoo_short:\n"
        "  ret\n.size too_short, .-too_short\n"
        ".balign 8\n.globl pool_head\n.type pool_head, %function\npool_head:\n"
        "  ldr w0, 1f\n  ret\n1: .word 42\n  nop\n  nop\n.size pool_head, .-pool_head\n"
        ".globl branch_into\n.type branch_into, %function\nbranch_into:\n"
        "  mov w0, #0\n1: add w0, w0, #1\n  cmp w0, #3\n  b.lt 1b\n  ret\n.size branch_into, .-branch_into\n");
#elif defined(__arm__) && defined(__thumb__)
int thumb_even(int quantity);
int thumb_odd(int quantity);
__asm__(".text\n.syntax unified\n.thumb\n"
        ".balign 4\n.globl too_short\n.type too_short, %function\n.thumb_func\ntoo_short:\n"
        "  bx lr\n.size too_short, .-too_short\n"
        ".balign 4\n.globl pool_head\n.type pool_head, %function\n.thumb_func\npool_head:\n"
        "  b.n 2f\n  nop\n1: .word 42\n2: ldr r0, 1b\n  bx lr\n.size pool_head, .-pool_head\n"
        ".balign 4\n.globl branch_into\n.type branch_into, %function\n.thumb_func\nbranch_into:\n"
        "  movs r0, #0\n1: adds r0, #1\n  cmp r0, #3\n  blt 1b\n  bx lr\n.size branch_into, .-branch_into\n"
        ".balign 4\n.globl thumb_even\n.type thumb_even, %function\n.thumb_func\nthumb_even:\n"
        "  movs r0, #50\n  adds r0, #25\n  adds r0, #25\n  nop\n  nop\n  bx lr\n.size thumb_even, .-thumb_even\n"
        ".balign 4\n  nop\n.globl thumb_odd\n.type thumb_odd, %function\n.thumb_func\nthumb_odd:\n"
        "  movs r0, #50\n  adds r0, #25\n  adds r0, #25\n  nop\n  nop\n  bx lr\n.size thumb_odd, .-thumb_odd\n");
#elif defined(__arm__)
__asm__(".text\n.syntax unified\n.arm\n"
        ".balign 4\n.globl too_short\n.type too_short, %function\ntoo_short:\n"
        "  bx lr\n.size too_short, .-too_short\n"
        ".globl pool_head\n.type pool_head, %function\npool_head:\n"
        "  b 2f\n1: .word 42\n2: ldr r0, 1b\n  bx lr\n.size pool_head, .-pool_head\n"
        ".globl branch_into\n.type branch_into, %function\nbranch_into:\n"
        "  mov r0, #0\n1: add r0, r0, #1\n  cmp r0, #3\n  blt 1b\n  bx lr\n.size branch_into, .-branch_into\n");
#endif

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc > 1 && strcmp(argv[1], "wait") == 0) {
        printf("ready\n");
        char buffer[64];
        while (read(0, buffer, sizeof buffer) > 0) {}
        return 0;
    }
    printf("price %d\n", price(argc));
#if defined(__arm__) && defined(__thumb__)
    printf("even %d\n", thumb_even(argc));
    printf("odd %d\n", thumb_odd(argc));
#endif
    /* Keep the refusal functions referenced (and so in the file even with --gc-sections). */
    if (argc > 5) printf("%d %d %d\n", too_short(), pool_head(), branch_into());
#if defined(__arm__)
    if (argc > 5) printf("%d\n", cheap_other(argc));
#endif
    return 0;
}
