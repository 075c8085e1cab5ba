// Processes from Go: os/exec with arguments, stdin and stdout pipes, a
// missing program, a child in its own process group (SysProcAttr.Setpgid,
// done by Go in the child before exec), exit statuses, and os/signal.
// The first argument is a cat-like program, the second one that prints
// its arguments.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	cat, echo := os.Args[1], os.Args[2]
	out, err := exec.Command(echo, "a", "b c", "").Output()
	fmt.Printf("echo: %q %v\n", out, err)

	cmd := exec.Command(cat)
	cmd.Stdin = strings.NewReader(strings.Repeat("hello through a pipe\n", 1000))
	out, err = cmd.Output()
	fmt.Printf("cat: %d bytes %v\n", len(out), err)

	err = exec.Command("/nonexistent/program").Run()
	fmt.Println("missing:", err)

	err = exec.Command("/bin/false").Run()
	var ee *exec.ExitError
	fmt.Println("exit status:", errors.As(err, &ee), ee != nil && ee.ExitCode() == 1)

	g := exec.Command(cat)
	g.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	g.Stdin = strings.NewReader("x")
	fmt.Println("own group:", g.Run())

	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGUSR1)
	syscall.Kill(os.Getpid(), syscall.SIGUSR1)
	select {
	case s := <-ch:
		fmt.Println("signal:", s)
	case <-time.After(5 * time.Second):
		fmt.Println("no signal")
	}
	signal.Reset(syscall.SIGUSR1)
}
