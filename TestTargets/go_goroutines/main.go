// go_goroutines: goroutines that block inside a call, so they return on another thread than the
// one they were called on. G goroutines (argv[1], default 8) each call main.slow(i) for i = 1, 2, …
// forever; slow sleeps 100 µs (the goroutine parks; the scheduler resumes it on any thread) and
// returns 2i. GOMAXPROCS is 4 unless the environment says otherwise. Prints `ready`; exits after
// argv[2] seconds (default 120).
package main

import (
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
