package radio

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
)

// ErrUnknownDriver is wrapped by errors about a driver name nobody
// registered.
var ErrUnknownDriver = errors.New("unknown driver")

// OpenFunc opens a driver's Link for a validated Config. The Link may
// still be down when it returns (a driver that reconnects by itself
// should not fail because the device is absent now). ctx bounds the open,
// not the Link's life: the Link lives until Close.
type OpenFunc func(ctx context.Context, cfg Config, log *slog.Logger) (Link, error)

// Driver is what a driver registers: how to open its Link and, for a
// driver with settings of its own, how to read, default and check them.
// The keys every radio has stay in Config; a driver owns the rest.
type Driver struct {
	// Open opens the Link. Required.
	Open OpenFunc
	// Options, for a driver with keys of its own, is the zero value of
	// the struct they decode into: the [radio.<name>] table of a
	// [[radio]] with this driver decodes into a new value of that type
	// (its toml tags name the keys; a key it lacks is an unknown key, as
	// anywhere in the file), which Config.Options then holds. Nil for a
	// driver without keys of its own.
	Options any
	// Defaults, if set, returns c with the driver's defaults: its
	// Options (also when the file has no table for them) and the common
	// keys whose default depends on the driver.
	Defaults func(c Config) Config
	// Validate, if set, checks what only this driver needs of a Config
	// with defaults applied: its Options and the common keys it requires.
	// The error names the key; Config.Validate adds the radio's name.
	Validate func(c Config) error
}

var registry struct {
	mu      sync.RWMutex
	drivers map[string]Driver // guarded by mu
	absent  map[string]string // names this build leaves out → why; guarded by mu
}

// Register makes a driver available under name to Config.Validate and
// Open. Drivers register from an init function; registering a name twice,
// an empty name, a nil Open or Options that are not a struct is a
// programming error and panics, as database/sql.Register does.
func Register(name string, d Driver) {
	if name == "" || d.Open == nil {
		panic("radio: Register with empty name or nil Open")
	}
	if d.Options != nil && reflect.TypeOf(d.Options).Kind() != reflect.Struct {
		panic("radio: Register " + name + ": Options must be a struct, not " + reflect.TypeOf(d.Options).String())
	}
	registry.mu.Lock()
	defer registry.mu.Unlock()
	if registry.drivers == nil {
		registry.drivers = make(map[string]Driver)
	}
	if _, dup := registry.drivers[name]; dup {
		panic("radio: Register called twice for driver " + name)
	}
	registry.drivers[name] = d
}

// RegisterAbsent names a driver this build leaves out on purpose: a
// [[radio]] that uses it is a config error that says why, rather than
// an unknown driver. A name also registered with Register is available
// after all; why is ignored then.
func RegisterAbsent(name, why string) {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	if registry.absent == nil {
		registry.absent = make(map[string]string)
	}
	registry.absent[name] = why
}

// Drivers returns the registered driver names, sorted.
func Drivers() []string {
	registry.mu.RLock()
	defer registry.mu.RUnlock()
	names := make([]string, 0, len(registry.drivers))
	for n := range registry.drivers {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// OptionsType is the type a registered driver's own keys decode into
// (Driver.Options), or nil for a driver without keys of its own or one
// not registered: what documentation of the keys is checked against.
func OptionsType(driver string) reflect.Type {
	d, ok := lookup(driver)
	if !ok || d.Options == nil {
		return nil
	}
	return reflect.TypeOf(d.Options)
}

func lookup(name string) (Driver, bool) {
	registry.mu.RLock()
	defer registry.mu.RUnlock()
	d, ok := registry.drivers[name]
	return d, ok
}

// checkDriver reports a driver name that no driver answers to.
func checkDriver(name string) error {
	if _, ok := lookup(name); ok || strings.HasPrefix(name, PluginDriverPrefix) {
		// A plugin's driver registers when the plugin starts, after the
		// configuration is checked; Open reports one that never came.
		return nil
	}
	registry.mu.RLock()
	why, absent := registry.absent[name]
	registry.mu.RUnlock()
	if absent {
		return fmt.Errorf("driver = %q: %w: %s", name, ErrUnknownDriver, why)
	}
	return fmt.Errorf("driver = %q: %w (registered: %s)", name, ErrUnknownDriver, registered())
}

func registered() string {
	if d := Drivers(); len(d) > 0 {
		return strings.Join(d, ", ")
	}
	return "none; a program imports the drivers it ships, as cmd/gatewayd does"
}
