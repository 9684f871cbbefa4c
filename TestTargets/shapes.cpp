// shapes: a C++ program with classes, for graft's vtable patches (--vtable). Every 10 ms it prints
// `shapes A B C D` — the areas (as integers) of a shapes::Circle (radius 2: 12), a shapes::Square
// (side 3: 9), a shapes::Ring (a Circle subclass that does not override area(): 12) and a
// shapes::LabeledCircle (Circle and Labeled: multiple inheritance, two vtables; 12), each called
// through a `Shape *`, then the label of the LabeledCircle through a `Labeled *`, then the areas of a
// shapes::Box<int> (a class template, side 2: 8), a shapes::Prism (a virtual base: its vtable starts
// with a vbase offset; 18) and a shapes::Cube (a Prism subclass, constructed through a construction
// vtable `_ZTC…`, inheriting area(): 18).
// argv: [1] lifetime s (120).
#include "victim.h"

namespace shapes {
struct Shape {
    virtual ~Shape() {}
    virtual double area() const = 0;
    virtual const char *name() const { return "shape"; }
};
struct Circle : Shape {
    double radius;
    explicit Circle(double r) : radius(r) {}
    double area() const override { return 3.0 * radius * radius; }
    const char *name() const override { return "circle"; }
};
struct Square : Shape {
    double side;
    explicit Square(double s) : side(s) {}
    double area() const override { return side * side; }
};
struct Ring : Circle {
    explicit Ring(double r) : Circle(r) {}
    const char *name() const override { return "ring"; }
};
struct Labeled {
    virtual ~Labeled() {}
    virtual const char *label() const { return "plain"; }
};
struct LabeledCircle : Circle, Labeled {
    explicit LabeledCircle(double r) : Circle(r) {}
    const char *label() const override { return "labeled"; }
};
template <typename T> struct Box : Shape {
    T side;
    explicit Box(T s) : side(s) {}
    double area() const override { return 2.0 * side * side; }
};
struct Prism : virtual Shape {
    double area() const override { return 18; }
};
struct Cube : Prism {
    Cube() {}
    const char *name() const override { return "cube"; }
};
// A virtual base that is not nearly empty: Marked's vtable has a secondary group for Tagged, whose
// vcall offsets (0 for twice(), which Marked does not override) follow Marked's own slots.
struct Tagged {
    long tag = 7;
    virtual ~Tagged() {}
    virtual long get() const { return tag; }
    virtual long twice() const { return 2 * tag; }
};
struct Marked : virtual Tagged {
    virtual long mark() const { return 1; }
    long get() const override { return 8; }
};
// Overloads: a LOCATION `shapes::twice` is ambiguous, `shapes::twice(long)` is not.
__attribute__((noinline, used)) long twice(long x) { return 2 * x; }
__attribute__((noinline, used)) double twice(double x) { return 2 * x; }
}  // namespace shapes

__attribute__((noinline)) static long areaOf(const shapes::Shape *shape) { return (long)shape->area(); }
__attribute__((noinline)) static const char *labelOf(const shapes::Labeled *labeled) { return labeled->label(); }

int main(int argc, char **argv) {
    victim_begin((unsigned)victim_arg(argc, argv, 1, VICTIM_DEFAULT_LIFETIME));
    shapes::Shape *all[4] = {new shapes::Circle(2), new shapes::Square(3), new shapes::Ring(2), new shapes::LabeledCircle(2)};
    shapes::Labeled *labeled = static_cast<shapes::LabeledCircle *>(all[3]);
    shapes::Shape *more[3] = {new shapes::Box<int>(2), new shapes::Prism(), new shapes::Cube()};
    shapes::Marked *volatile marked = new shapes::Marked();
    volatile long marks = marked->mark() + static_cast<shapes::Tagged *>(marked)->twice();  // 1 + 14
    (void)marks;
    victim_ready();
    for (;;) {
        printf("shapes %ld %ld %ld %ld %s %ld %ld %ld\n", areaOf(all[0]), areaOf(all[1]), areaOf(all[2]), areaOf(all[3]), labelOf(labeled),
               areaOf(more[0]), areaOf(more[1]), areaOf(more[2]));
        volatile long sink = shapes::twice(3L) + (long)shapes::twice(1.5);
        (void)sink;
        victim_sleep_ms(10);
    }
}
