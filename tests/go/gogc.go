// Memory from Go: a big allocation, many small ones, maps, the garbage
// collector run by hand, and finalizers. The output is a function of the
// arguments only.
package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
)

type node struct {
	left, right *node
	val         int
}

func tree(depth int) *node {
	if depth == 0 {
		return &node{val: 1}
	}
	return &node{left: tree(depth - 1), right: tree(depth - 1), val: depth}
}

func (n *node) sum() int {
	if n == nil {
		return 0
	}
	return n.val + n.left.sum() + n.right.sum()
}

func main() {
	mib := 128
	if len(os.Args) > 1 {
		mib, _ = strconv.Atoi(os.Args[1])
	}
	// One big slice, touched everywhere.
	big := make([]byte, mib<<20)
	for i := range big {
		big[i] = byte(i * 7)
	}
	var s uint64
	for i := 0; i < len(big); i += 4096 {
		s += uint64(big[i])
	}
	fmt.Println("big", len(big), s)
	big = nil
	runtime.GC()

	// Garbage: many trees built and dropped, so the GC runs by itself.
	total := 0
	for i := 0; i < 40; i++ {
		total += tree(14).sum()
	}
	fmt.Println("trees", total)

	m := make(map[string]int)
	for i := 0; i < 200000; i++ {
		m["k"+strconv.Itoa(i)] = i
	}
	sum := 0
	for k, v := range m {
		if len(k) > 0 {
			sum += v
		}
	}
	fmt.Println("map", len(m), sum)

	finalized := make(chan int, 10)
	for i := 0; i < 10; i++ {
		x := new([64]byte)
		i := i
		runtime.SetFinalizer(x, func(*[64]byte) { finalized <- i })
	}
	var st runtime.MemStats
	for len(finalized) < 10 {
		runtime.GC()
		runtime.Gosched()
	}
	debug.FreeOSMemory()
	runtime.ReadMemStats(&st)
	fmt.Println("finalized", len(finalized), "gc ran", st.NumGC > 0)
}
