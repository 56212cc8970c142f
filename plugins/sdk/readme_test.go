package sdk

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// README.md is the public contract plugin authors read: it stays true to
// the package. Every exported name, and every method of the interfaces a
// plugin implements or calls, is in it; the handshake it quotes is the
// one the package has; and the minimal plugin it shows uses only what the
// package exports, the way the package declares it.
func TestREADMEIsTheContract(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	exported, methods := declarations(t)
	if len(exported) < 10 {
		t.Fatalf("%d exported names found: the parse missed the package", len(exported))
	}
	for name := range exported {
		if !strings.Contains(readme, "`"+name) && !strings.Contains(readme, "`sdk."+name) && !strings.Contains(readme, "sdk."+name+"(") && !strings.Contains(readme, "sdk."+name+"{") {
			t.Errorf("README.md does not name %s", name)
		}
	}
	for iface, ms := range methods {
		for _, m := range ms {
			if !strings.Contains(readme, m+"(") && !strings.Contains(readme, "`"+m+"`") {
				t.Errorf("README.md does not name %s.%s", iface, m)
			}
		}
	}
	flat := strings.Join(strings.Fields(readme), " ")
	for _, want := range []string{
		fmt.Sprintf("`sdk.ProtocolVersion` = %d", ProtocolVersion),
		fmt.Sprintf("magic cookie `%s`", Handshake.MagicCookieKey),
	} {
		if !strings.Contains(flat, want) {
			t.Errorf("README.md does not say %q", want)
		}
	}
	example := regexp.MustCompile("(?s)```go\n(// Command hello-plugin.*?)```").FindStringSubmatch(readme)
	if example == nil {
		t.Fatal("README.md has no minimal plugin")
	}
	f, err := parser.ParseFile(token.NewFileSet(), "example.go", example[1], 0)
	if err != nil {
		t.Fatalf("the minimal plugin does not parse: %v", err)
	}
	var used int
	ast.Inspect(f, func(n ast.Node) bool {
		sel, ok := n.(*ast.SelectorExpr)
		if !ok {
			return true
		}
		if pkg, ok := sel.X.(*ast.Ident); ok && pkg.Name == "sdk" {
			used++
			if _, ok := exported[sel.Sel.Name]; !ok {
				t.Errorf("the minimal plugin uses sdk.%s, which the package does not export", sel.Sel.Name)
			}
		}
		return true
	})
	if used < 3 {
		t.Fatalf("the minimal plugin uses %d names of sdk", used)
	}
	// Its translator has the methods Translator asks for.
	for _, m := range methods["Translator"] {
		if !strings.Contains(example[1], ") "+m+"(") {
			t.Errorf("the minimal plugin's translator has no %s", m)
		}
	}
}

// declarations parses the package: its exported names, and the methods of
// its exported interfaces.
func declarations(t *testing.T) (map[string]bool, map[string][]string) {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	exported, methods := map[string]bool{}, map[string][]string{}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if d.Recv == nil && d.Name.IsExported() {
					exported[d.Name.Name] = true
				}
			case *ast.GenDecl:
				for _, s := range d.Specs {
					switch s := s.(type) {
					case *ast.TypeSpec:
						if !s.Name.IsExported() {
							continue
						}
						exported[s.Name.Name] = true
						if it, ok := s.Type.(*ast.InterfaceType); ok {
							for _, m := range it.Methods.List {
								for _, n := range m.Names {
									methods[s.Name.Name] = append(methods[s.Name.Name], n.Name)
								}
							}
						}
					case *ast.ValueSpec:
						for _, n := range s.Names {
							if n.IsExported() {
								exported[n.Name] = true
							}
						}
					}
				}
			}
		}
	}
	return exported, methods
}
