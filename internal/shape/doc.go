// Package shape holds the test that keeps the module's source readable in
// pieces: no file over maxFileLines lines and no function over
// maxFuncLines lines, generated code and tests aside, except the few
// listed with their reason. It has no code of its own.
package shape
