// go_loop: the first article's program. main.a returns 1, main.b returns 2; prints `ready`, then
// `a=%d` of a() every argv[1] ms (default 10), and calls main.add(3, 4) and strings.IndexByte("hello", 'l')
// (an ABI0 assembly function underneath) each time. Built with -gcflags=-l so a and b stay real
// functions (no inlining). argv: [1] interval ms, [2] lifetime s (default 120).
package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

func a() int { return 1 }

func b() int { return 2 }

// add takes its arguments in Go's register ABI (rax, rbx): hooked with --args 2 it shows (3, 4).
func add(x, y int) int { return x + y }

var sink int

// greeting: strings.IndexByte(greeting, 'l') reaches the ABI0 assembly function
// internal/bytealg.IndexByteString.abi0 with (ptr, 5, 'l') on the stack.
var greeting = "hello"

func arg(i int, def int) int {
	if i < len(os.Args) {
		if v, err := strconv.Atoi(os.Args[i]); err == nil {
			return v
		}
	}
	return def
}

func main() {
	interval := time.Duration(arg(1, 10)) * time.Millisecond
	lifetime := time.Duration(arg(2, 120)) * time.Second
	// Never run forever unattended: exit by ourselves (Go ignores SIGALRM, so no alarm()).
	time.AfterFunc(lifetime, func() { os.Exit(0) })
	if len(os.Args) > 1000 { // never true, but keeps main.b reachable for the linker
		fmt.Printf("b=%d\n", b())
	}
	fmt.Println("ready")
	for {
		fmt.Printf("a=%d\n", a())
		sink += add(3, 4)
		sink += strings.IndexByte(greeting, 'l')
		time.Sleep(interval)
	}
}
