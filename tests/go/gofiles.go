// Files from Go: create, write, read back, append, rename, list, stat,
// seek and remove, in the directory given as the first argument, plus
// reading the job's own system description the way Go programs do.
package main

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

func check(err error) {
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: gofiles DIR")
		os.Exit(2)
	}
	dir := os.Args[1]
	check(os.MkdirAll(filepath.Join(dir, "sub", "deeper"), 0o755))

	// Write a file line by line through bufio, then read it back.
	name := filepath.Join(dir, "lines.txt")
	f, err := os.Create(name)
	check(err)
	w := bufio.NewWriter(f)
	for i := 0; i < 20000; i++ {
		fmt.Fprintf(w, "line %d %s\n", i, strings.Repeat("x", i%37))
	}
	check(w.Flush())
	check(f.Close())
	data, err := os.ReadFile(name)
	check(err)
	fmt.Printf("lines.txt %d bytes sha256 %x\n", len(data), sha256.Sum256(data))

	r, err := os.Open(name)
	check(err)
	sc := bufio.NewScanner(r)
	n, longest := 0, 0
	for sc.Scan() {
		n++
		if len(sc.Text()) > longest {
			longest = len(sc.Text())
		}
	}
	check(sc.Err())
	// Seek and read in the middle.
	_, err = r.Seek(1000, io.SeekStart)
	check(err)
	buf := make([]byte, 16)
	_, err = io.ReadFull(r, buf)
	check(err)
	r.Close()
	fmt.Printf("scanned %d lines, longest %d, at 1000: %q\n", n, longest, buf)

	// Append, rename, stat, truncate.
	a, err := os.OpenFile(filepath.Join(dir, "sub", "log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	check(err)
	for i := 0; i < 3; i++ {
		fmt.Fprintf(a, "entry %d\n", i)
	}
	a.Close()
	check(os.Rename(filepath.Join(dir, "sub", "log"), filepath.Join(dir, "sub", "deeper", "log.old")))
	st, err := os.Stat(filepath.Join(dir, "sub", "deeper", "log.old"))
	check(err)
	fmt.Printf("log.old size %d mode %v dir %v\n", st.Size(), st.Mode().Perm(), st.IsDir())
	check(os.Truncate(name, 100))
	st, err = os.Stat(name)
	check(err)
	fmt.Println("truncated to", st.Size())
	_, err = os.Stat(filepath.Join(dir, "missing"))
	fmt.Println("missing is not exist:", os.IsNotExist(err))

	// io.Copy between files, and a walk of the tree.
	src, err := os.Open(name)
	check(err)
	dst, err := os.Create(filepath.Join(dir, "copy"))
	check(err)
	copied, err := io.Copy(dst, src)
	check(err)
	src.Close()
	dst.Close()
	fmt.Println("copied", copied)
	var seen []string
	check(filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		kind := "f"
		if info.IsDir() {
			kind = "d"
		}
		seen = append(seen, kind+" "+rel)
		return nil
	}))
	sort.Strings(seen)
	fmt.Println("tree:", strings.Join(seen, ", "))

	// Symlinks and the working directory.
	check(os.Symlink("lines.txt", filepath.Join(dir, "link")))
	target, err := os.Readlink(filepath.Join(dir, "link"))
	check(err)
	fmt.Println("link ->", target)
	check(os.Chdir(filepath.Join(dir, "sub")))
	wd, err := os.Getwd()
	check(err)
	abs, _ := filepath.Abs(dir)
	fmt.Println("cwd is sub:", wd == filepath.Join(abs, "sub"))
	entries, err := os.ReadDir(".")
	check(err)
	for _, e := range entries {
		fmt.Println("entry", e.Name(), e.IsDir())
	}
	check(os.RemoveAll(filepath.Join(dir, "sub")))
	_, err = os.Stat(filepath.Join(dir, "sub"))
	fmt.Println("removed:", os.IsNotExist(err))

	// stdin to stdout.
	in, err := io.ReadAll(os.Stdin)
	check(err)
	fmt.Printf("stdin %d bytes: %q\n", len(in), strings.ToUpper(string(in)))
}
