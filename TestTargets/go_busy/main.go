// go_busy: a goroutine that keeps its CPU busy in one long call, for traces under Go's asynchronous
// preemption (sysmon sends SIGURG to a goroutine that has run for 10 ms; under single-step every
// call of spin runs that long). Built with -gcflags=-l so spin stays a function.
// argv: [1] n, the iterations of spin (5000), [2] lifetime s (120).
// Prints `ready`; per stdin line `go` calls spin(n) and prints `spin <result>`; at EOF `eof`, exit 0.
package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"time"
)

// spin is a leaf loop with no calls and no stack check: the same instructions every call, so a
// trace of it has an exact count whatever preempts it.
func spin(n int) int {
	x := 1
	for i := 0; i < n; i++ {
		x = x*31 + i ^ (x >> 7)
	}
	return x
}

func arg(i int, def int) int {
	if i < len(os.Args) {
		if v, err := strconv.Atoi(os.Args[i]); err == nil {
			return v
		}
	}
	return def
}

func main() {
	n := arg(1, 5000)
	lifetime := time.Duration(arg(2, 120)) * time.Second
	time.AfterFunc(lifetime, func() { os.Exit(0) })
	fmt.Println("ready")
	input := bufio.NewScanner(os.Stdin)
	for input.Scan() {
		if input.Text() == "go" {
			fmt.Printf("spin %d\n", spin(n))
		}
	}
	fmt.Println("eof")
}
