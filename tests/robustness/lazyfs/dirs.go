package main

// Lazy directory entries (-lazy-dirs): the names of regular files become durable only with an
// fsync of their directory, as POSIX promises and no more.
//
// Changes are still applied to the backing directory at once (the namespace stays simple),
// but before the first change to a directory since its last fsync, its listing of regular
// files (name -> inode) is recorded as the durable one, and every inode in it is hard-linked
// into a stash directory beside the backing directory, so that it can be brought back after
// an unlink or a rename. An fsync of the directory forgets the record: the current listing
// is durable. At a power loss every recorded directory gets its durable listing back: names
// created since are removed, names removed or replaced since come back (from the stash).
// An inode left without a name is gone, with its data.
//
// Limits: only regular files are tracked; creating, renaming or removing a directory is
// durable at once; the directories are found again by their inode numbers.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

type dirJournal struct {
	mu      sync.Mutex
	enabled bool
	stash   string                       // a directory on the backing file system
	durable map[uint64]map[string]uint64 // directory inode -> its durable listing
	root    string                       // the backing directory
}

var dirs = &dirJournal{durable: map[uint64]map[string]uint64{}}

// listFiles returns the regular files of the directory at path: name -> inode.
func listFiles(path string) (map[string]uint64, uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return nil, 0, err
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, 0, err
	}
	files := map[string]uint64{}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		var fst syscall.Stat_t
		if syscall.Lstat(filepath.Join(path, e.Name()), &fst) == nil {
			files[e.Name()] = fst.Ino
		}
	}
	return files, st.Ino, nil
}

// before records the durable listing of the directory at path, if it has none yet: call it
// before changing the directory.
func (j *dirJournal) before(path string) syscall.Errno {
	if !j.enabled {
		return 0
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	var st syscall.Stat_t
	if syscall.Stat(path, &st) != nil {
		return 0 // the change itself will fail and say why
	}
	if _, ok := j.durable[st.Ino]; ok {
		return 0
	}
	files, ino, err := listFiles(path)
	if err != nil {
		return 0
	}
	for name, fino := range files {
		stashed := filepath.Join(j.stash, strconv.FormatUint(fino, 10))
		if _, err := os.Lstat(stashed); err == nil {
			continue
		}
		if err := os.Link(filepath.Join(path, name), stashed); err != nil {
			fmt.Fprintln(os.Stderr, "lazyfs: stash:", err)
			return syscall.EIO
		}
	}
	j.durable[ino] = files
	return 0
}

// synced: an fsync of the directory at path made its current listing durable.
func (j *dirJournal) synced(path string) {
	if !j.enabled {
		return
	}
	var st syscall.Stat_t
	if syscall.Stat(path, &st) != nil {
		return
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	delete(j.durable, st.Ino)
}

// powerLoss gives every recorded directory its durable listing back; returns what it changed.
func (j *dirJournal) powerLoss() []string {
	if !j.enabled {
		return nil
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	paths := map[uint64]string{}
	_ = filepath.Walk(j.root, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.IsDir() {
			paths[info.Sys().(*syscall.Stat_t).Ino] = p
		}
		return nil
	})
	var changed []string
	for ino, want := range j.durable {
		dir, ok := paths[ino]
		if !ok {
			continue // the directory itself is gone (directory changes are not tracked)
		}
		rel, _ := filepath.Rel(j.root, dir)
		have, _, err := listFiles(dir)
		if err != nil {
			continue
		}
		for name, fino := range have {
			if want[name] != fino {
				if os.Remove(filepath.Join(dir, name)) == nil {
					changed = append(changed, "-"+filepath.Join(rel, name))
				}
			}
		}
		for name, fino := range want {
			if have[name] != fino {
				stashed := filepath.Join(j.stash, strconv.FormatUint(fino, 10))
				if os.Link(stashed, filepath.Join(dir, name)) == nil {
					changed = append(changed, "+"+filepath.Join(rel, name))
				}
			}
		}
	}
	j.durable = map[uint64]map[string]uint64{}
	return changed
}

// open makes the stash (empty) beside the backing directory; close removes it.
func (j *dirJournal) open(backing string) error {
	j.root = backing
	j.stash = filepath.Join(filepath.Dir(backing), "."+filepath.Base(backing)+".lazyfs-stash")
	if err := os.RemoveAll(j.stash); err != nil {
		return err
	}
	return os.Mkdir(j.stash, 0o700)
}

func (j *dirJournal) close() {
	if j.stash != "" {
		os.RemoveAll(j.stash)
	}
}

// lazyDir is an open directory: go-fuse's loopback stream, with an fsync that also makes the
// directory's listing durable.
type lazyDir struct {
	inner fs.FileHandle
	path  string
}

var (
	_ fs.FileReaddirenter = (*lazyDir)(nil)
	_ fs.FileSeekdirer    = (*lazyDir)(nil)
	_ fs.FileReleasedirer = (*lazyDir)(nil)
	_ fs.FileFsyncdirer   = (*lazyDir)(nil)
)

func (d *lazyDir) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	return d.inner.(fs.FileReaddirenter).Readdirent(ctx)
}

func (d *lazyDir) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	return d.inner.(fs.FileSeekdirer).Seekdir(ctx, off)
}

func (d *lazyDir) Releasedir(ctx context.Context, flags uint32) {
	d.inner.(fs.FileReleasedirer).Releasedir(ctx, flags)
}

func (d *lazyDir) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	if poweredOff.Load() {
		return syscall.EIO
	}
	time.Sleep(fsyncDelay)
	dirs.synced(d.path)
	return 0
}

func (n *lazyNode) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	inner, fuseFlags, errno := n.LoopbackNode.OpendirHandle(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	return &lazyDir{inner: inner, path: n.backingPath()}, fuseFlags, 0
}
