// Goroutines, channels, sync, timers and the scheduler: every line of
// output is deterministic except the "cpus" line, which the test compares
// separately (the job has one vCPU).
package main

import (
	"fmt"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func fib(n int) int {
	if n < 2 {
		return n
	}
	return fib(n-1) + fib(n-2)
}

func main() {
	fmt.Printf("cpus %d %d\n", runtime.NumCPU(), runtime.GOMAXPROCS(0))

	// A worker pool over channels.
	jobs := make(chan int, 100)
	results := make(chan [2]int, 100)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range jobs {
				results <- [2]int{n, fib(n)}
			}
		}()
	}
	for n := 0; n < 30; n++ {
		jobs <- n
	}
	close(jobs)
	wg.Wait()
	close(results)
	var got [][2]int
	for r := range results {
		got = append(got, r)
	}
	sort.Slice(got, func(i, j int) bool { return got[i][0] < got[j][0] })
	var parts []string
	for _, r := range got {
		parts = append(parts, fmt.Sprint(r[1]))
	}
	fmt.Println("fib", strings.Join(parts, " "))

	// A mutex and atomics under contention.
	var mu sync.Mutex
	counter := 0
	var atom int64
	var wg2 sync.WaitGroup
	for g := 0; g < 50; g++ {
		wg2.Add(1)
		go func() {
			defer wg2.Done()
			for i := 0; i < 2000; i++ {
				mu.Lock()
				counter++
				mu.Unlock()
				atomic.AddInt64(&atom, 2)
				if i%500 == 0 {
					runtime.Gosched()
				}
			}
		}()
	}
	wg2.Wait()
	fmt.Println("counter", counter, atom)

	// Sleeps: each at least as long as asked, and the clock moves. (Not
	// their order of waking: timers that expire together, as on a stalled
	// host, wake their goroutines in scheduler order.)
	start := time.Now()
	short := make(chan string, 5)
	for _, d := range []int{50, 10, 40, 20, 30} {
		d := d
		go func() {
			t := time.Now()
			time.Sleep(time.Duration(d) * time.Millisecond)
			if el := time.Since(t); el < time.Duration(d)*time.Millisecond {
				short <- fmt.Sprintf("%d ms sleep took %v", d, el)
				return
			}
			short <- ""
		}()
	}
	for i := 0; i < 5; i++ {
		if s := <-short; s != "" {
			fmt.Println(s)
		}
	}
	fmt.Println("sleeps done")
	if el := time.Since(start); el < 50*time.Millisecond || el > 5*time.Minute {
		fmt.Println("bad elapsed", el)
	}

	// select with a timeout, a ticker, a timer that is stopped.
	tick := time.NewTicker(5 * time.Millisecond)
	ticks := 0
	timeout := time.After(30 * time.Second)
	stopped := time.NewTimer(time.Hour)
	stopped.Stop()
loop:
	for {
		select {
		case <-tick.C:
			ticks++
			if ticks == 10 {
				break loop
			}
		case <-timeout:
			fmt.Println("timeout before 10 ticks")
			break loop
		case <-stopped.C:
			fmt.Println("a stopped timer fired")
		}
	}
	tick.Stop()
	fmt.Println("ticks", ticks)

	// A goroutine spinning without function calls is preempted (SIGURG)
	// so that the main goroutine still runs on the one CPU.
	var stop int32
	go func() {
		x := 0
		for atomic.LoadInt32(&stop) == 0 {
			x++
		}
		_ = x
	}()
	time.Sleep(20 * time.Millisecond)
	atomic.StoreInt32(&stop, 1)
	fmt.Println("preempted ok")

	// sync.Once, sync.Cond, buffered and unbuffered channel hand-off.
	var once sync.Once
	for i := 0; i < 3; i++ {
		once.Do(func() { fmt.Println("once") })
	}
	var cmu sync.Mutex
	cond := sync.NewCond(&cmu)
	ready := false
	done := make(chan bool)
	go func() {
		cmu.Lock()
		for !ready {
			cond.Wait()
		}
		cmu.Unlock()
		done <- true
	}()
	time.Sleep(time.Millisecond)
	cmu.Lock()
	ready = true
	cond.Broadcast()
	cmu.Unlock()
	fmt.Println("cond", <-done)

	ping, pong := make(chan int), make(chan int)
	go func() {
		for v := range ping {
			pong <- v + 1
		}
		close(pong)
	}()
	v := 0
	for i := 0; i < 1000; i++ {
		ping <- v
		v = <-pong
	}
	close(ping)
	fmt.Println("pingpong", v)
	fmt.Fprintln(os.Stderr, "done")
}
