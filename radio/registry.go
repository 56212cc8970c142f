package radio

import (
	"context"
	"errors"
	"log/slog"
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

var registry struct {
	mu      sync.RWMutex
	drivers map[string]OpenFunc // guarded by mu
}

// Register makes a driver available under name to Config.Validate and
// Open. Drivers register from an init function; registering a name twice,
// an empty name or a nil open func is a programming error and panics, as
// database/sql.Register does.
func Register(name string, open OpenFunc) {
	if name == "" || open == nil {
		panic("radio: Register with empty name or nil open func")
	}
	registry.mu.Lock()
	defer registry.mu.Unlock()
	if registry.drivers == nil {
		registry.drivers = make(map[string]OpenFunc)
	}
	if _, dup := registry.drivers[name]; dup {
		panic("radio: Register called twice for driver " + name)
	}
	registry.drivers[name] = open
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

func lookup(name string) (OpenFunc, bool) {
	registry.mu.RLock()
	defer registry.mu.RUnlock()
	f, ok := registry.drivers[name]
	return f, ok
}

func registered() string {
	if d := Drivers(); len(d) > 0 {
		return strings.Join(d, ", ")
	}
	return "none; import radio/drivers"
}
