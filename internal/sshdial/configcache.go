package sshdial

import (
	"os"
	"sync"
	"time"
)

// configCacheTTL is how long a parsed configuration is reused. A fan-out
// resolves every host within it (parsing is most of Resolve's cost: 0.6 ms
// per host with a 32-host config), while an edited file, or a new file an
// Include pattern would match, is read again once it has passed. A changed
// size or modification time of a file read invalidates the entry at once.
const configCacheTTL = 2 * time.Second

type configKey struct{ file, home string }

type configEntry struct {
	cs     *configSet
	loaded time.Time
	stats  []fileStamp // of cs.readFiles, in order
}

type fileStamp struct {
	size  int64
	mtime time.Time
}

// configCache holds the configurations parsed lately, by the file given
// (empty: the default files) and home directory. A configSet is read-only
// once loaded, so resolutions share it.
var configCache struct {
	mu sync.Mutex
	m  map[configKey]*configEntry
}

// cachedConfig is loadConfig through configCache.
func cachedConfig(o *Options, home string) (*configSet, error) {
	k := configKey{o.ConfigFile, home}
	now := time.Now()
	configCache.mu.Lock()
	e := configCache.m[k]
	configCache.mu.Unlock()
	if e != nil && now.Sub(e.loaded) < configCacheTTL && stampsMatch(e.cs.readFiles, e.stats) {
		return e.cs, nil
	}
	cs, err := loadConfig(o, home)
	if err != nil {
		return nil, err
	}
	e = &configEntry{cs: cs, loaded: now, stats: stamps(cs.readFiles)}
	configCache.mu.Lock()
	if configCache.m == nil || len(configCache.m) > 64 {
		configCache.m = make(map[configKey]*configEntry)
	}
	configCache.m[k] = e
	configCache.mu.Unlock()
	return cs, nil
}

func stamps(files []string) []fileStamp {
	out := make([]fileStamp, len(files))
	for i, f := range files {
		if fi, err := os.Stat(f); err == nil {
			out[i] = fileStamp{fi.Size(), fi.ModTime()}
		}
	}
	return out
}

func stampsMatch(files []string, want []fileStamp) bool {
	for i, f := range files {
		fi, err := os.Stat(f)
		if err != nil || fi.Size() != want[i].size || !fi.ModTime().Equal(want[i].mtime) {
			return false
		}
	}
	return true
}
