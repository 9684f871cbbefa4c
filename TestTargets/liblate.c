/* liblate.so: loaded by dlopen_later after `go`. late_f(x) returns 2x. */
__attribute__((noinline, used)) int late_f(int x) {
    volatile int twice = 2;
    return x * twice;
}
