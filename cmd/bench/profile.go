package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// profileHook is added to each binary's main package through go build
// -overlay (the tree is not touched): the original main is renamed
// splitpointMain, and this main wraps it with a CPU profile and, at the
// end, an allocation profile. Only a normal return writes them (the
// gateway and cloudproc on SIGINT, the device after --frames).
const profileHook = `package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
)

func main() {
	dir, name := os.Getenv("SPLITPOINT_BENCH_PROFILE"), os.Getenv("SPLITPOINT_BENCH_PROFILE_NAME")
	if dir == "" || name == "" {
		splitpointMain()
		return
	}
	runtime.MemProfileRate = 64 << 10
	cpu, err := os.Create(filepath.Join(dir, name+".cpu.pprof"))
	if err == nil {
		err = pprof.StartCPUProfile(cpu)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench profile:", err)
	}
	splitpointMain()
	pprof.StopCPUProfile()
	cpu.Close()
	f, err := os.Create(filepath.Join(dir, name+".allocs.pprof"))
	if err == nil {
		err = pprof.Lookup("allocs").WriteTo(f, 0)
		f.Close()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench profile:", err)
	}
}
`

type profileResult struct {
	split    int
	proc     string
	frames   int
	fps      float64
	cpu      time.Duration // the process's CPU time over the run (/proc)
	cpuTop   string
	allocTop string
	err      string
}

// buildProfiled builds the three binaries with the profile hook.
func buildProfiled(ctx context.Context, tmp, bin string) error {
	repl := map[string]string{}
	for _, name := range []string{"gateway", "device", "cloudproc"} {
		out, err := exec.CommandContext(ctx, "go", "list", "-f", "{{.Dir}}", modPath+"/cmd/"+name).Output()
		if err != nil {
			return fmt.Errorf("go list cmd/%s: %w", name, err)
		}
		dir := strings.TrimSpace(string(out))
		src, err := os.ReadFile(filepath.Join(dir, "main.go"))
		if err != nil {
			return err
		}
		if n := bytes.Count(src, []byte("\nfunc main() {")); n != 1 {
			return fmt.Errorf("cmd/%s/main.go: %d \"func main() {\" lines, want 1", name, n)
		}
		src = bytes.Replace(src, []byte("\nfunc main() {"), []byte("\nfunc splitpointMain() {"), 1)
		odir := filepath.Join(tmp, "overlay", name)
		if err := os.MkdirAll(odir, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(odir, "main.go"), src, 0o644); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(odir, "zz_bench_profile.go"), []byte(profileHook), 0o644); err != nil {
			return err
		}
		repl[filepath.Join(dir, "main.go")] = filepath.Join(odir, "main.go")
		repl[filepath.Join(dir, "zz_bench_profile.go")] = filepath.Join(odir, "zz_bench_profile.go")
	}
	b, err := json.Marshal(map[string]any{"Replace": repl})
	if err != nil {
		return err
	}
	ov := filepath.Join(tmp, "overlay.json")
	if err := os.WriteFile(ov, b, 0o644); err != nil {
		return err
	}
	return buildBinaries(ctx, bin, []string{"-overlay", ov})
}

// runProfiles profiles the three processes, fresh for every split, on the
// AVI input.
func runProfiles(ctx context.Context, o options, tmp string) ([]profileResult, error) {
	dir, err := filepath.Abs(o.profile)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	bin := filepath.Join(tmp, "profbin")
	progress("building the profiling binaries into %s (go build -overlay: main wrapped by a pprof hook)", bin)
	if err := buildProfiled(ctx, tmp, bin); err != nil {
		return nil, err
	}
	avi := filepath.Join(tmp, "ball.avi")
	if _, err := os.Stat(avi); err != nil {
		if err := writeAVI(avi, o.frames); err != nil {
			return nil, err
		}
	}
	var out []profileResult
	for _, k := range o.profSplits {
		env := func(proc string) []string {
			return []string{"SPLITPOINT_BENCH_PROFILE=" + dir, fmt.Sprintf("SPLITPOINT_BENCH_PROFILE_NAME=split%d-%s", k, proc)}
		}
		progress("profiling split %d (%d frames of the AVI)", k, o.frames)
		gw, err := startStackEnv(ctx, bin, true, env(pGW), env(pCloud))
		if err != nil {
			return nil, err
		}
		s, err := deviceRun(ctx, bin, gw, avi, o.frames, k, o.devConfig, env(pDevice), 0)
		gw.stop()
		if err != nil {
			return nil, fmt.Errorf("profile split %d: %w", k, err)
		}
		progress("split %d: %.1f frames/s", k, s.fps)
		for _, p := range procNames {
			name := fmt.Sprintf("split%d-%s", k, p)
			r := profileResult{split: k, proc: p, frames: s.frames, fps: s.fps, cpu: s.cpu[p]}
			var errs []string
			cpuFile, allocFile := filepath.Join(dir, name+".cpu.pprof"), filepath.Join(dir, name+".allocs.pprof")
			// The C time of a cgo call is charged to runtime.cgocall
			// under the Go function that made it: hiding the runtime's
			// cgo frames charges it to the OpenCV call (_Cfunc_…).
			if r.cpuTop, err = pprofTop(ctx, filepath.Join(bin, p), cpuFile, "-hide", `^runtime\.(cgocall|asmcgocall)$`); err != nil {
				errs = append(errs, err.Error())
			}
			if r.allocTop, err = pprofTop(ctx, filepath.Join(bin, p), allocFile, "-sample_index=alloc_space"); err != nil {
				errs = append(errs, err.Error())
			}
			r.err = strings.Join(errs, "; ")
			out = append(out, r)
		}
	}
	return out, nil
}

// pprofTop is go tool pprof -top -nodecount=10, without the header lines
// that name files and times.
func pprofTop(ctx context.Context, bin, file string, extra ...string) (string, error) {
	if _, err := os.Stat(file); err != nil {
		return "", fmt.Errorf("%s: not written (the process did not return from main)", filepath.Base(file))
	}
	args := append([]string{"tool", "pprof", "-top", "-nodecount=10"}, extra...)
	args = append(args, bin, file)
	cmd := exec.CommandContext(ctx, "go", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go tool pprof %s: %v %s", filepath.Base(file), err, strings.TrimSpace(stderr.String()))
	}
	var keep []string
	for _, l := range strings.Split(strings.TrimRight(stdout.String(), "\n"), "\n") {
		if strings.HasPrefix(l, "File: ") || strings.HasPrefix(l, "Build ID: ") || strings.HasPrefix(l, "Time: ") {
			continue
		}
		keep = append(keep, l)
	}
	return strings.Join(keep, "\n"), nil
}

func printProfiles(w io.Writer, dir string, ps []profileResult) {
	fmt.Fprintf(w, "\n## Profiles — the real binaries, fresh processes per split, the AVI input (files in %s)\n\n", dir)
	fmt.Fprintf(w, "Built with go build -overlay adding a pprof hook around main (CPU profile for the process's life, allocation profile at exit, MemProfileRate 64 KiB). runtime.cgocall is hidden, so C time on a Go thread shows under the cgo call (_Cfunc_…) that made it; samples of threads OpenCV starts itself (TBB, FFmpeg's decoder) have no Go stack and show as the library ([libopencv_imgproc…], [libtbb…]; runtime._ExternalCode in -cum views). Kernel time (page faults, syscalls) is charged to the call that caused it. Go allocations only: OpenCV's C++ allocations (Mats) are not in the allocation profiles.\n")
	for _, p := range ps {
		fmt.Fprintf(w, "\n### split %d — %s: %.2f s CPU over %d frames (%.2f ms/frame), %.1f frames/s\n\n", p.split, p.proc, p.cpu.Seconds(), p.frames, 1000*p.cpu.Seconds()/float64(max(1, p.frames)), p.fps)
		if p.err != "" {
			fmt.Fprintf(w, "error: %s\n", p.err)
		}
		if p.cpuTop != "" {
			fmt.Fprintf(w, "```\n%s\n```\n", p.cpuTop)
		}
		if p.allocTop != "" {
			fmt.Fprintf(w, "```\n%s\n```\n", p.allocTop)
		}
	}
}
