package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// The committed copyright file is what the module graph gives now: a new
// dependency, or one a program starts to link, cannot be forgotten.
func TestCommittedCopyrightIsCurrent(t *testing.T) {
	want, err := generate("../..")
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("../copyright")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
		i := 0
		for i < len(gl) && i < len(wl) && gl[i] == wl[i] {
			i++
		}
		t.Fatalf("packaging/copyright is stale from line %d (committed %q, module graph %q): run `go generate ./packaging`",
			i+1, at(gl, i), at(wl, i))
	}
	// Every module of the go.sum that a program links is in it.
	for _, m := range []string{"github.com/hashicorp/go-plugin/*", "github.com/eclipse/paho.golang/*", "go.bug.st/serial/*", "google.golang.org/grpc/*"} {
		if !bytes.Contains(want, []byte("\nFiles: "+m+"\n")) {
			t.Errorf("no paragraph for %s", m)
		}
	}
}

func at(lines []string, i int) string {
	if i < len(lines) {
		return lines[i]
	}
	return "(end of file)"
}

// Licences are told by their standard phrases; anything else is an error,
// never a guess.
func TestDetectKnowsTheCommonLicencesAndRefusesTheRest(t *testing.T) {
	bsd := "Redistribution and use in source and binary forms, with or without\nmodification, are permitted provided that the following conditions are met:"
	for _, tc := range []struct {
		name, text, want string
	}{
		{"Apache-2.0", "Apache License\n Version 2.0, January 2004\nTERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION", "Apache-2.0"},
		{"MPL-2.0", "Mozilla Public License Version 2.0\n==================================", "MPL-2.0"},
		{"BSD-3-clause", bsd + "\nNeither the name of X nor the names of its contributors may be used to endorse or promote products derived from this software", "BSD-3-clause"},
		{"BSD-2-clause", bsd + "\n1. Redistributions of source code must retain", "BSD-2-clause"},
		{"Expat", "Permission is hereby granted, free of charge, to any person obtaining a copy\nof this software", "Expat"},
		{"ISC", "Permission to use, copy, modify, and/or distribute this software for any\npurpose with or without fee is hereby granted", "ISC"},
		{"EPL or EDL", "Eclipse Public License - v 2.0 ... Eclipse Distribution License v1.0", "EPL-2.0 or BSD-3-clause"},
		{"BSD-4-clause", bsd + "\nAll advertising materials mentioning features or use of this software", ""},
		{"GPL", "GNU GENERAL PUBLIC LICENSE\nVersion 3, 29 June 2007", ""},
		{"two in one file", "Permission is hereby granted, free of charge, to any person obtaining a copy\nApache License Version 2.0 TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION", ""},
	} {
		l, err := detect(tc.text)
		if tc.want == "" {
			if err == nil {
				t.Errorf("%s: recognised as %s; want an error", tc.name, l.name)
			}
			continue
		}
		if err != nil || l.name != tc.want {
			t.Errorf("%s: %q %v, want %s", tc.name, l.name, err, tc.want)
		}
	}
}

func TestHoldersTakesCopyrightLinesNotTemplatesOrSentences(t *testing.T) {
	got := holders("Copyright (c) 2011, Open Knowledge Foundation Ltd.\nCopyright [yyyy] [name of copyright owner]\n" +
		"The above copyright notice and this permission notice shall be included\nCopyright IBM Corp. 2016, 2025\n" +
		"Copyright (c) Yasuhiro MATSUMOTO <mattn.jp@gmail.com>\nCopyright holders may not be named\n")
	want := []string{"2011, Open Knowledge Foundation Ltd.", "IBM Corp. 2016, 2025", "Yasuhiro MATSUMOTO <mattn.jp@gmail.com>"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("holders = %q, want %q", got, want)
	}
}
