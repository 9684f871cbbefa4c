// go_typed: Go functions whose typed arguments and results graft decodes from DWARF with Go's
// register ABI (ABIInternal). Prints `ready`, then every argv[1] ms (default 10) calls each function
// below once with the same arguments and prints `tick <n>`. Built with -gcflags=-l (no inlining).
// argv: [1] interval ms, [2] lifetime s (default 120).
package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"
)

type Point struct{ X, Y int }

// Pair mixes an int32, a float64 and a string: rax, X0, then rbx+rcx.
type Pair struct {
	ID    int32
	Ratio float64
	Name  string
}

// Grid holds an array of 3: not register-assignable, so a Grid goes on the stack whole.
type Grid struct{ Cells [3]int }

type Counter struct{ n int }

// Mixed: small fields (float32, bool, int16), a pointer, a nested struct, an array of one string.
type Mixed struct {
	F     float32
	B     bool
	I     int16
	P     *int
	Inner Point
	One   [1]string
}

// one: a single argument and result. one(5) = 6.
func one(x int) int { return x + 1 }

// nine: every integer register. nine(1…9) = 45.
func nine(a, b, c, d, e, f, g, h, i int) int { return a + b + c + d + e + f + g + h + i }

// ten: the tenth argument on the stack. ten(1…10) = 55.
func ten(a, b, c, d, e, f, g, h, i, j int) int { return a + b + c + d + e + f + g + h + i + j }

// divmod(17, 5) = (3, 2): two results, rax and rbx.
func divmod(a, b int) (int, int) { return a / b, a % b }

// quorem(17, 5) = (q=3, r=2): named results.
func quorem(a, b int) (q, r int) {
	q, r = a/b, a%b
	return
}

var errMissing = errors.New("missing")

// lookup("pear") = ("green", nil); lookup("plum") = ("", errMissing).
func lookup(key string) (string, error) {
	if key == "pear" {
		return "green", nil
	}
	return "", errMissing
}

// ratio(3, 4) = (0.75, true): a float result in X0, a bool in rax.
func ratio(a, b float64) (float64, bool) {
	if b == 0 {
		return 0, false
	}
	return a / b, true
}

// shift({X:1, Y:2}, 10) = {X:11, Y:12}: a struct argument (rax, rbx) then an int (rcx), a struct result.
func shift(p Point, by int) Point { return Point{p.X + by, p.Y + by} }

// describe({ID:7, Ratio:0.5, Name:"seven"}, 3) = 10: a struct over int and float registers, then an int.
func describe(p Pair, n int) int { return int(p.ID) + n }

// sumGrid({Cells:[4 5 6]}, 2) = 17: the Grid on the stack, k in rax.
func sumGrid(g Grid, k int) int { return g.Cells[0] + g.Cells[1] + g.Cells[2] + k }

// spread(1) = (1, 2, … 10): ten results, the tenth in the results' stack area.
func spread(a int) (int, int, int, int, int, int, int, int, int, int) {
	return a, a + 1, a + 2, a + 3, a + 4, a + 5, a + 6, a + 7, a + 8, a + 9
}

// cmul((1+2i), (3+4i)) = (-5+10i): complex128 in two float registers each.
func cmul(a, b complex128) complex128 { return a * b }

// overflow(1…8, {X:9, Y:10}, 11) = 66: eight ints leave one register, p needs two: p goes on the
// stack whole (rsp+8) and z still takes r11.
func overflow(a, b, c, d, e, f, g, h int, p Point, z int) int {
	return a + b + c + d + e + f + g + h + p.X + p.Y + z
}

// gridOf(1…10) = {Cells:[1 2 10]}: j on the stack at rsp+8, so the Grid result (never in registers)
// follows it: at the return, rsp+8.
func gridOf(a, b, c, d, e, f, g, h, i, j int) Grid {
	return Grid{Cells: [3]int{a, b, j + c - d - e - f - g - h - i + d + e + f + g + h + i - c}}
}

// mix({F:1.5, B:true, I:-3, P:&sink, Inner:{X:4, Y:5}, One:["one"]}, struct{}{}, 200) = (m with I*2, F+1):
// struct{} takes nothing; u lands in the register after the Mixed.
func mix(m Mixed, e struct{}, u uint8) (Mixed, float32) {
	m.I *= 2
	return m, m.F + float32(u)/200
}

// Add: a method with a pointer receiver (rax), then d (rbx). Returns the new count.
func (c *Counter) Add(d int) int {
	c.n += d
	return c.n
}

func arg(i int, def int) int {
	if i < len(os.Args) {
		if v, err := strconv.Atoi(os.Args[i]); err == nil {
			return v
		}
	}
	return def
}

var sink int
var fsink float64
var ssink string

func main() {
	interval := time.Duration(arg(1, 10)) * time.Millisecond
	lifetime := time.Duration(arg(2, 120)) * time.Second
	time.AfterFunc(lifetime, func() { os.Exit(0) })
	counter := &Counter{}
	fmt.Println("ready")
	for n := 1; ; n++ {
		sink += one(5)
		sink += nine(1, 2, 3, 4, 5, 6, 7, 8, 9)
		sink += ten(1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
		q, r := divmod(17, 5)
		q2, r2 := quorem(17, 5)
		sink += q + r + q2 + r2
		s, err := lookup("pear")
		ssink = s
		if err != nil {
			sink++
		}
		_, err = lookup("plum")
		if err != nil {
			sink++
		}
		f, ok := ratio(3, 4)
		if ok {
			fsink += f
		}
		p := shift(Point{1, 2}, 10)
		sink += p.X + p.Y
		sink += describe(Pair{ID: 7, Ratio: 0.5, Name: "seven"}, 3)
		sink += sumGrid(Grid{Cells: [3]int{4, 5, 6}}, 2)
		r0, _, _, _, _, _, _, _, _, r9 := spread(1)
		sink += r0 + r9
		c := cmul(complex(1, 2), complex(3, 4))
		fsink += real(c)
		sink += overflow(1, 2, 3, 4, 5, 6, 7, 8, Point{9, 10}, 11)
		sink += gridOf(1, 2, 3, 4, 5, 6, 7, 8, 9, 10).Cells[2]
		m, mf := mix(Mixed{F: 1.5, B: true, I: -3, P: &sink, Inner: Point{4, 5}, One: [1]string{"one"}}, struct{}{}, 200)
		fsink += float64(mf) + float64(m.I)
		sink += counter.Add(2)
		fmt.Printf("tick %d\n", n)
		time.Sleep(interval)
	}
}
