// libownifunc.so: a library of our own with an IFUNC, own_pick, whose resolver is not glibc's.
// graft never calls such a resolver in a process (it might take a lock): an own_pick no module has
// bound yet is refused; once a caller's GOT slot is bound, that slot says the implementation.
// own_pick(x) returns x + 1 (the implementation the resolver picks).
static int pick_plus_one(int x) { return x + 1; }
static int pick_never(int x) { return x - 1000; }

static int (*resolve_own_pick(void))(int) {
    static volatile int always = 1;
    return always ? pick_plus_one : pick_never;
}

int own_pick(int x) __attribute__((ifunc("resolve_own_pick")));
