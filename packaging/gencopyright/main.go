// Command gencopyright writes the Debian package's copyright file
// (machine-readable DEP-5) from the module graph: every Go module linked
// into each program the package ships, for every architecture it is built
// for, with the licence its LICENSE file states and the copyright lines it
// and its NOTICE hold. It reads the modules from the module cache (go mod
// download first) and needs no network.
//
// A licence is recognised by the phrases of its standard text; one it does
// not recognise is an error naming the module and the file, never a guess.
// Run it through go generate in packaging/; a test regenerates the file and
// compares, so that a new dependency cannot be left out.
//
// Usage: go run ./gencopyright [-root ..] [-o copyright]
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/opaque-edge/gatewayd/internal/shipped"
)

// mainModule is this repository's module: its own code, under LICENSE.
const mainModule = "github.com/opaque-edge/gatewayd"

// stdModule names the Go standard library among the modules.
const stdModule = "go"

func main() {
	root := flag.String("root", "..", "the repository's root")
	out := flag.String("o", "copyright", "the file to write; - for stdout")
	flag.Parse()
	text, err := generate(*root)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gencopyright:", err)
		os.Exit(1)
	}
	if *out == "-" {
		os.Stdout.Write(text)
		return
	}
	if err := os.WriteFile(*out, text, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "gencopyright:", err)
		os.Exit(1)
	}
}

// module is one linked module and what the copyright file says of it.
type module struct {
	path, version, dir string
	programs           []string // that link it, in the order of shipped.Programs
	license            license
	text               string   // the licence text, when it goes inline
	copyright          []string // lines of holders
	notice             string   // the NOTICE file (Apache-2.0 §4(d))
}

// generate returns the copyright file for the repository at root.
func generate(root string) ([]byte, error) {
	mods := map[string]*module{}
	for _, arch := range shipped.GOARCHes {
		// Programs built with the same tags are listed together.
		var tags []string
		for _, p := range shipped.Programs {
			if !slices.Contains(tags, p.Tags) {
				tags = append(tags, p.Tags)
			}
		}
		for _, t := range tags {
			if err := linked(root, arch, t, mods); err != nil {
				return nil, err
			}
		}
	}
	goroot, err := goEnv(root, "GOROOT")
	if err != nil {
		return nil, err
	}
	if m, ok := mods[stdModule]; ok {
		m.dir = filepath.Join(goroot, "src")
	}
	var list []*module
	for _, m := range mods {
		if m.path == mainModule {
			continue
		}
		if err := m.read(goroot); err != nil {
			return nil, err
		}
		list = append(list, m)
	}
	slices.SortFunc(list, func(a, b *module) int {
		if (a.path == stdModule) != (b.path == stdModule) { // the standard library first
			if a.path == stdModule {
				return -1
			}
			return 1
		}
		return strings.Compare(a.path, b.path)
	})
	return render(list), nil
}

// linked adds the modules each program built with tags links on arch to
// mods.
func linked(root, arch, tags string, mods map[string]*module) error {
	var programs []shipped.Program
	var pkgs []string
	for _, p := range shipped.Programs {
		if p.Tags == tags {
			programs = append(programs, p)
			pkgs = append(pkgs, p.Pkg)
		}
	}
	args := []string{"-tags", tags}
	// Every package of the programs and the module it belongs to...
	out, err := goList(root, arch, slices.Concat(args, []string{"-deps", "-f",
		"{{.ImportPath}}\t{{if .Standard}}" + stdModule + "\t\t{{else}}{{with .Module}}{{.Path}}\t{{.Version}}\t{{with .Replace}}{{.Dir}}{{else}}{{.Dir}}{{end}}{{end}}{{end}}"}, pkgs)...)
	if err != nil {
		return err
	}
	owner := map[string]*module{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 4 || f[1] == "" {
			return fmt.Errorf("go list: package without a module: %q", line)
		}
		m := mods[f[1]]
		if m == nil {
			m = &module{path: f[1], version: f[2], dir: f[3]}
			mods[f[1]] = m
		}
		owner[f[0]] = m
	}
	// ...and which packages each program links.
	out, err = goList(root, arch, slices.Concat(args, []string{"-f", "{{.ImportPath}}{{range .Deps}} {{.}}{{end}}"}, pkgs)...)
	if err != nil {
		return err
	}
	for i, line := range strings.Split(strings.TrimSpace(out), "\n") {
		for _, pkg := range strings.Fields(line) {
			m := owner[pkg]
			if m == nil {
				return fmt.Errorf("go list: %s of %s: unknown package", pkg, programs[i].Name())
			}
			if !slices.Contains(m.programs, programs[i].Name()) {
				m.programs = append(m.programs, programs[i].Name())
				slices.SortFunc(m.programs, func(a, b string) int { return index(a) - index(b) })
			}
		}
	}
	return nil
}

// index is the place of the program named name in shipped.Programs.
func index(name string) int {
	return slices.IndexFunc(shipped.Programs, func(p shipped.Program) bool { return p.Name() == name })
}

func goList(root, arch string, args ...string) (string, error) {
	cmd := exec.Command("go", append([]string{"list"}, args...)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH="+arch, "CGO_ENABLED=0", "GOFLAGS=-mod=readonly")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go list (GOARCH=%s): %w\n%s", arch, err, stderr.String())
	}
	return string(out), nil
}

func goEnv(root, name string) (string, error) {
	cmd := exec.Command("go", "env", name)
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go env %s: %w", name, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// licenseFiles are the names a module's licence goes by, in the order
// they are looked for.
var licenseFiles = []string{"LICENSE", "LICENSE.txt", "LICENSE.md", "LICENCE", "COPYING", "COPYING.txt"}

// read finds the module's licence, copyright lines and NOTICE.
func (m *module) read(goroot string) error {
	dir := m.dir
	if m.path == stdModule {
		dir = goroot
	}
	var name string
	var text []byte
	for _, n := range licenseFiles {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err == nil {
			name, text = n, b
			break
		}
		if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s: %w", m.path, err)
		}
	}
	if text == nil {
		return fmt.Errorf("%s %s: no licence file (%s) in %s", m.path, m.version, strings.Join(licenseFiles, ", "), dir)
	}
	l, err := detect(string(text))
	if err != nil {
		return fmt.Errorf("%s %s: %s: %w", m.path, m.version, filepath.Join(dir, name), err)
	}
	m.license = l
	m.copyright = holders(string(text))
	for _, n := range []string{"NOTICE", "NOTICE.txt", "NOTICE.md"} {
		if b, err := os.ReadFile(filepath.Join(dir, n)); err == nil {
			m.notice = strings.TrimSpace(string(b))
			if len(m.copyright) == 0 {
				m.copyright = holders(m.notice)
			}
			break
		}
	}
	if l.common == "" {
		m.text = strings.TrimSpace(string(text))
		for _, extra := range l.extra {
			b, err := os.ReadFile(filepath.Join(dir, extra))
			if err != nil {
				return fmt.Errorf("%s %s: %s names %s: %w", m.path, m.version, name, extra, err)
			}
			m.text += "\n\n" + strings.TrimSpace(string(b))
			for _, h := range holders(string(b)) {
				if !slices.Contains(m.copyright, h) {
					m.copyright = append(m.copyright, h)
				}
			}
		}
	}
	if len(m.copyright) == 0 {
		m.copyright = []string{"the authors of " + m.path + " (its licence file names no holder)"}
	}
	return nil
}

// license is a recognised licence: its Debian short name, the file in
// /usr/share/common-licenses that has its text (empty when its text must
// be given), and other files of the module its text refers to.
type license struct {
	name   string
	common string
	extra  []string
}

// detect recognises a licence text by the phrases of the standard texts.
// Anything else, or a text that matches two licences where it is not a
// known dual licence, is an error: a human must look.
func detect(text string) (license, error) {
	t := strings.Join(strings.Fields(text), " ") // one space, whatever the wrapping
	has := func(phrases ...string) bool {
		for _, p := range phrases {
			if !strings.Contains(t, p) {
				return false
			}
		}
		return true
	}
	var found []license
	bsd := has("Redistribution and use in source and binary forms")
	switch {
	case has("Eclipse Public License - v 2.0", "Eclipse Distribution License"):
		// Eclipse's dual licence: EPL-2.0, or the EDL-1.0, which is the
		// BSD-3-clause text, in the module's edl-v10 file.
		found = append(found, license{name: "EPL-2.0 or BSD-3-clause", extra: []string{"edl-v10"}})
	case has("Eclipse Public License"):
		found = append(found, license{name: "EPL-2.0"})
	}
	if has("Apache License", "Version 2.0", "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION") {
		found = append(found, license{name: "Apache-2.0", common: "Apache-2.0"})
	}
	if has("Mozilla Public License Version 2.0") || has("Mozilla Public License, version 2.0") {
		found = append(found, license{name: "MPL-2.0", common: "MPL-2.0"})
	}
	if bsd && !has("advertising materials") {
		if has("endorse or promote products derived from this software") {
			found = append(found, license{name: "BSD-3-clause"})
		} else {
			found = append(found, license{name: "BSD-2-clause"})
		}
	}
	if has("Permission is hereby granted, free of charge, to any person obtaining a copy") {
		found = append(found, license{name: "Expat"})
	}
	if has("Permission to use, copy, modify, and/or distribute this software for any purpose") ||
		has("Permission to use, copy, modify, and distribute this software for any purpose with or without fee") {
		found = append(found, license{name: "ISC"})
	}
	switch len(found) {
	case 0:
		return license{}, errors.New("licence not recognised: read it and teach gencopyright its phrases")
	case 1:
		return found[0], nil
	}
	if found[0].name == "EPL-2.0 or BSD-3-clause" && len(found) == 2 && found[1].name == "BSD-3-clause" {
		return found[0], nil // the EDL's text may be in the same file
	}
	names := make([]string, len(found))
	for i, l := range found {
		names[i] = l.name
	}
	return license{}, fmt.Errorf("the text matches several licences (%s): read it and teach gencopyright", strings.Join(names, ", "))
}

var (
	copyrightLine = regexp.MustCompile(`(?i)^copyright\b\s*(\(c\)|©)?\s*(.*)$`)
	year          = regexp.MustCompile(`\b(19|20)\d\d\b`)
)

// holders are the copyright lines of a text, "Copyright (c)" taken off:
// a line that starts with "Copyright" and has a "(c)" or a year, and is
// not the template of a licence's appendix or one of its sentences.
func holders(text string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		m := copyrightLine.FindStringSubmatch(line)
		if m == nil || m[1] == "" && !year.MatchString(m[2]) ||
			strings.Contains(line, "[yyyy]") || strings.Contains(line, "<year>") || strings.Contains(strings.ToLower(line), "notice") {
			continue
		}
		if h := strings.TrimSpace(m[2]); h != "" && !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	return out
}

// render writes the DEP-5 file.
func render(mods []*module) []byte {
	var b bytes.Buffer
	b.WriteString(`Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: gatewayd
Upstream-Contact: gatewayd maintainers <maintainers@opaque-edge.example>
Source: https://github.com/opaque-edge/gatewayd
Comment: Code generated by packaging/gencopyright from the module graph; DO NOT EDIT.
 gatewayd's programs are statically linked Go programs. Besides their own
 code they contain the Go standard library and the Go modules below, each
 paragraph naming the programs that link it (gatewayd, gatewayctl, and the
 plugins gatewayd-http, gatewayd-mqtt and gatewayd-slipradio); run
 "go version -m" on a program for the exact versions in it.

Files: *
Copyright: 2026 The gatewayd authors
License: Apache-2.0

`)
	common := map[string]bool{"Apache-2.0": true}
	for _, m := range mods {
		files := m.path + "/*"
		what := fmt.Sprintf("%s %s, linked into %s.", m.path, m.version, strings.Join(m.programs, ", "))
		if m.path == stdModule {
			what = "The Go standard library, linked into " + strings.Join(m.programs, ", ") + "."
		}
		fmt.Fprintf(&b, "Files: %s\nCopyright: %s\n", files, field(strings.Join(m.copyright, "\n")))
		comment := wrap(what, 72)
		if m.notice != "" {
			comment += "\nIts NOTICE file:\n\n" + m.notice
		}
		fmt.Fprintf(&b, "Comment: %s\n", field(comment))
		if m.license.common != "" {
			common[m.license.common] = true
			fmt.Fprintf(&b, "License: %s\n\n", m.license.name)
			continue
		}
		fmt.Fprintf(&b, "License: %s\n%s\n\n", m.license.name, body(m.text))
	}
	for _, name := range []string{"Apache-2.0", "MPL-2.0"} {
		if common[name] {
			fmt.Fprintf(&b, "License: %s\n On Debian systems the full text of this licence is in\n /usr/share/common-licenses/%s.\n\n", name, name)
		}
	}
	return bytes.TrimRight(b.Bytes(), "\n")
}

// wrap breaks s into lines of at most width, between words.
func wrap(s string, width int) string {
	var b strings.Builder
	n := 0
	for i, w := range strings.Fields(s) {
		switch {
		case i == 0:
		case n+1+len(w) > width:
			b.WriteByte('\n')
			n = 0
		default:
			b.WriteByte(' ')
			n++
		}
		b.WriteString(w)
		n += len(w)
	}
	return b.String()
}

// field formats a multi-line field value: the first line as is, the rest
// indented, empty lines as " .".
func field(s string) string {
	first, rest, _ := strings.Cut(s, "\n")
	if rest == "" {
		return first
	}
	return first + "\n" + body(rest)
}

// body is text as continuation lines of a field.
func body(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		l = strings.TrimRight(strings.ReplaceAll(l, "\t", "        "), " ")
		if l == "" {
			l = "."
		}
		lines[i] = " " + l
	}
	return strings.Join(lines, "\n")
}
