// go_goroutines: goroutines that block inside a call, so they return on another thread than the
// one they were called on. G goroutines (argv[1], default 8) each call main.slow(i) for i = 1, 2, …
// forever; slow sleeps 100 µs (the goroutine parks; the scheduler resumes it on any thread) and
// returns 2i. GOMAXPROCS is 4 unless the environment says otherwise. Prints `ready`; exits after
// argv[2] seconds (default 120).
// argv[3] "big": no slow calls; after `ready`, a line on stdin starts 100 goroutines that each call
// main.big(g) once (a 16 KiB frame on a new goroutine's 8 KiB stack: its stack grows, and Go runs
// big's entry again) and prints `big <sum of big(g) = g>` (4950).
package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"
)

// slow is hooked with --returns: its return must be paired with its call by goroutine, not thread.
func slow(i int) int {
	time.Sleep(100 * time.Microsecond)
	return 2 * i
}

var sinks [64]int

// big has a frame past StackBig (4 KiB): its stack check is `mov r12, rsp; sub r12, N; jb; cmp; jbe`.
func big(g int) int {
	var buf [16384]byte
	buf[g%len(buf)] = byte(g)
	return int(buf[(g*7)%len(buf)]) + g // g: buf[7g] is still 0 (and g = 0 gives 0)
}

func runBig() {
	bufio.NewReader(os.Stdin).ReadString('\n')
	done := make(chan int)
	for g := 0; g < 100; g++ {
		go func(g int) { done <- big(g) }(g)
	}
	sum := 0
	for g := 0; g < 100; g++ {
		sum += <-done
	}
	fmt.Printf("big %d\n", sum)
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
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(4)
	}
	goroutines := arg(1, 8)
	lifetime := time.Duration(arg(2, 120)) * time.Second
	time.AfterFunc(lifetime, func() { os.Exit(0) })
	if len(os.Args) > 3 && os.Args[3] == "big" {
		fmt.Println("ready")
		runBig()
		select {}
	}
	for g := 0; g < goroutines && g < len(sinks); g++ {
		go func(g int) {
			for i := 1; ; i++ {
				sinks[g] += slow(i)
			}
		}(g)
	}
	fmt.Println("ready")
	select {}
}
