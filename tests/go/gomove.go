// A Go program to move mid-run: goroutines computing, sleeping and
// writing a file while the job changes hosts, then checks that its
// clocks, its view of the machine and its process group still hold.
// Prints "step N" as it goes (the test moves it after "step 2").
package main

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

func work(seed int) uint64 {
	h := uint64(seed)
	for i := 0; i < 3_000_000; i++ {
		h = h*6364136223846793005 + 1442695040888963407
	}
	return h
}

// The processors /proc/cpuinfo lists, and whether it names their model
// (the host's, also once the body runs where /proc is out of its reach).
func cpuinfoProcessors() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return err.Error()
	}
	return fmt.Sprint(strings.Count(string(b), "processor\t:"), " ", strings.Contains(string(b), "\nmodel name"))
}

func main() {
	steps := 12
	out, err := os.Create(os.Args[1])
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	w := bufio.NewWriter(out)
	var before syscall.Utsname
	syscall.Uname(&before)
	fmt.Printf("cpus %d %s\n", runtime.NumCPU(), cpuinfoProcessors())
	start := time.Now()
	var total uint64
	for step := 0; step < steps; step++ {
		var wg sync.WaitGroup
		var mu sync.Mutex
		results := make([]uint64, 4)
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				r := work(step*4 + g)
				time.Sleep(20 * time.Millisecond)
				mu.Lock()
				results[g] = r
				mu.Unlock()
			}(g)
		}
		wg.Wait()
		for _, r := range results {
			total ^= r
			fmt.Fprintf(w, "%d %x\n", step, r)
		}
		w.Flush()
		fmt.Printf("step %d\n", step)
		time.Sleep(100 * time.Millisecond)
	}
	w.Flush()
	out.Close()
	el := time.Since(start)
	fmt.Printf("total %x\n", total)
	fmt.Println("elapsed plausible:", el > time.Duration(steps)*100*time.Millisecond && el < 10*time.Minute)

	// Read back what was written across the move.
	data, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	fmt.Printf("file %d bytes %x\n", len(data), sha256.Sum256(data))

	// Process group and session after the move.
	pid := syscall.Getpid()
	fmt.Println("setpgid:", syscall.Setpgid(0, 0))
	fmt.Println("pgrp is pid:", syscall.Getpgrp() == pid)
	sid, _, _ := syscall.RawSyscall(syscall.SYS_GETSID, 0, 0, 0)
	fmt.Println("sid unchanged by setpgid:", int(sid) != pid)
	fmt.Println("setsid as group leader:", syscall.Setpgid(0, 0) == nil, func() error { _, err := syscall.Setsid(); return err }())
	fmt.Println("cpus after", runtime.NumCPU(), cpuinfoProcessors())
	var after syscall.Utsname
	syscall.Uname(&after)
	fmt.Println("uname kept:", before == after, before.Sysname[0] == 'L')
}
