// Command lazyfs mounts a directory through FUSE so that file data written but not yet made
// durable lives only in this daemon's memory, and can be thrown away as a power loss would.
// It is a test tool for petcd's power-loss test (tests/robustness/test_power_loss.py), in the
// spirit of LazyFS (which is not reachable from the build machines).
//
// Usage:
//
//	lazyfs [-seed N] [-fsync-delay D] [-lazy-dirs] BACKING_DIR MOUNT_POINT
//
// Theory of operation
// -------------------
// The mount is a passthrough ("loopback") of BACKING_DIR. The backing directory is the disk:
// whatever is in it survives a power loss. File data is not written to it by write(2):
//
//   - write, truncate (ftruncate, open with O_TRUNC) and fallocate change an in-memory overlay
//     of the file (dirty 4 KiB chunks, the logical size, and how much of the backing file is
//     still valid after a truncation). Reads, getattr and statx see the overlay, so the file
//     looks written to every process.
//   - fsync and fdatasync of a file (and a write through a descriptor opened with O_SYNC or
//     O_DSYNC, for which the kernel sends an fsync too) write that file's overlay to the
//     backing file and forget it. Nothing else makes data durable: not close(2) (FLUSH and
//     RELEASE do nothing), not sync_file_range(2) (the kernel never tells a FUSE daemon about
//     it), not an fsync of another descriptor of another file.
//   - Directory operations (create, mkdir, rename, unlink, link, symlink) are applied to the
//     backing directory at once, and so survive a power loss even without an fsync of the
//     directory, as in LazyFS, unless -lazy-dirs is given: then the names of regular files
//     are durable only after an fsync of their directory (dirs.go). A rename
//     carries the file's unsynced overlay along (the overlay belongs to the inode), so a file
//     renamed into place without an fsync of its data is found empty or stale after a power
//     loss, which is the common bug.
//
// Power loss: SIGUSR1 drops every overlay (printing how many files and bytes were lost,
// and which inodes) and from then on fails every write, fsync and directory change with EIO,
// so that nothing a process still running does (an fsync in flight, a retry) reaches the disk:
// the caller cuts the power first, then kills the processes, then unmounts (SIGTERM). SIGUSR2
// is a torn power loss: before the rest is dropped, a random half of the unsynced 4 KiB chunks
// (and of the unsynced truncations) is written to the backing files, as the kernel's writeback
// may have written some dirty pages, in any order, before the power went (LazyFS's torn
// writes); -seed N makes that choice replayable. SIGKILL of the daemon loses the overlays
// too, but leaves a dead mount behind that the caller must unmount (umount -l). SIGTERM and
// SIGINT are a clean shutdown: every overlay is written to the backing files first (none
// after a power loss), then the daemon unmounts and exits.
// After a power loss the kernel's page cache of the mount still holds the lost data: the
// mount must be recycled (unmounted, mounted again by a new daemon) before anything reads it.
//
// -fsync-delay D makes every fsync of a file take D (a real disk's flush), which widens the
// window in which a power loss finds data written but not yet durable.
//
// The page cache of the mount stays enabled (no direct I/O), because an mmap of a FUSE file
// needs it (LMDB and bbolt read their data files through mmap). Writes are write-through
// (no FUSE writeback cache), so every write(2) reaches this daemon before it returns.
//
// Invariants: the overlay of a file is keyed by its inode number (the backing directory must
// not cross file systems); a file's logical size is at least the backing length still valid
// (validLen <= size); every byte of a dirty chunk past the logical size is zero.
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

const chunkBytes = 4096

// overlay is the unsynced state of one file.
type overlay struct {
	mu       sync.Mutex
	size     int64            // the logical size
	validLen int64            // bytes of the backing file not cut off by a truncation since
	chunks   map[int64][]byte // chunk number -> its whole content (chunkBytes)
	fd       int              // a descriptor of the backing file (for the torn power loss)
}

type lazyState struct {
	mu       sync.Mutex
	overlays map[uint64]*overlay

	synced       int64 // files whose overlay an fsync wrote
	syncedBytes  int64
	droppedFiles int64
	droppedBytes int64
	tornBytes    int64 // unsynced bytes a torn power loss wrote to the backing files
}

var state = &lazyState{overlays: map[uint64]*overlay{}}

// poweredOff: after a power loss nothing reaches the backing directory any more (writes,
// fsyncs, creations, renames and unlinks fail with EIO) until the daemon exits.
var poweredOff atomic.Bool

func (s *lazyState) get(ino uint64) *overlay {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.overlays[ino]
}

// getOrCreate returns the overlay of ino, creating it from the backing file's length.
func (s *lazyState) getOrCreate(ino uint64, fd int) (*overlay, syscall.Errno) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if poweredOff.Load() {
		return nil, syscall.EIO
	}
	if o := s.overlays[ino]; o != nil {
		return o, 0
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return nil, fs.ToErrno(err)
	}
	own, err := syscall.Dup(fd)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	syscall.CloseOnExec(own)
	o := &overlay{size: st.Size, validLen: st.Size, chunks: map[int64][]byte{}, fd: own}
	s.overlays[ino] = o
	return o, 0
}

// remove forgets the overlay of ino if it is o (s.mu held).
func (s *lazyState) remove(ino uint64, o *overlay) {
	if s.overlays[ino] == o {
		delete(s.overlays, ino)
		syscall.Close(o.fd)
	}
}

func (s *lazyState) forget(ino uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o := s.overlays[ino]; o != nil {
		s.remove(ino, o)
	}
}

// powerLoss drops every unsynced byte, except, when torn, a random half of the unsynced
// chunks (and truncations), which reach the backing file first, as a kernel's writeback of
// some dirty pages before the power went would: a torn, out-of-order write.
func (s *lazyState) powerLoss(torn bool, rng *rand.Rand) {
	s.mu.Lock()
	defer s.mu.Unlock()
	poweredOff.Store(true)
	inos := make([]uint64, 0, len(s.overlays))
	for ino := range s.overlays {
		inos = append(inos, ino)
	}
	sort.Slice(inos, func(i, j int) bool { return inos[i] < inos[j] }) // seeded: replayable
	for _, ino := range inos {
		o := s.overlays[ino]
		o.mu.Lock()
		s.droppedFiles++
		fmt.Printf("lazyfs: unsynced ino=%d chunks=%d size=%d synced_size=%d\n",
			ino, len(o.chunks), o.size, o.validLen)
		for _, c := range sortedChunks(o.chunks) {
			if torn && rng.Intn(2) == 0 {
				s.tornBytes += o.writeBackChunk(c)
			} else {
				s.droppedBytes += chunkBytes
			}
		}
		if torn && rng.Intn(2) == 0 {
			var st syscall.Stat_t
			if syscall.Fstat(o.fd, &st) == nil && st.Size > o.validLen {
				syscall.Ftruncate(o.fd, o.validLen)
			}
		}
		o.mu.Unlock()
		s.remove(ino, o)
	}
}

// writeBackChunk writes one dirty chunk (clipped to the logical size) to the backing file,
// extending it if needed; returns the bytes written (o.mu held).
func (o *overlay) writeBackChunk(c int64) int64 {
	start := c * chunkBytes
	if start >= o.size {
		return 0
	}
	data := o.chunks[c][:min(chunkBytes, o.size-start)]
	n, err := syscall.Pwrite(o.fd, data, start)
	if err != nil {
		return 0
	}
	return int64(n)
}

func sortedChunks(chunks map[int64][]byte) []int64 {
	keys := make([]int64, 0, len(chunks))
	for c := range chunks {
		keys = append(keys, c)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	return keys
}

// readBacking fills buf with the backing file's bytes at off, as zeros past validLen.
func readBacking(fd int, buf []byte, off, validLen int64) syscall.Errno {
	for i := range buf {
		buf[i] = 0
	}
	if off >= validLen {
		return 0
	}
	n := int64(len(buf))
	if off+n > validLen {
		n = validLen - off
	}
	for done := int64(0); done < n; {
		got, err := syscall.Pread(fd, buf[done:n], off+done)
		if err != nil {
			return fs.ToErrno(err)
		}
		if got == 0 {
			break // the backing file is shorter: the rest reads as zeros
		}
		done += int64(got)
	}
	return 0
}

func (o *overlay) read(fd int, buf []byte, off int64) (int, syscall.Errno) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if off >= o.size {
		return 0, 0
	}
	n := int64(len(buf))
	if off+n > o.size {
		n = o.size - off
	}
	for pos := off; pos < off+n; {
		c := pos / chunkBytes
		in := pos - c*chunkBytes
		take := min(chunkBytes-in, off+n-pos)
		dst := buf[pos-off : pos-off+take]
		if chunk, ok := o.chunks[c]; ok {
			copy(dst, chunk[in:in+take])
		} else if errno := readBacking(fd, dst, pos, o.validLen); errno != 0 {
			return 0, errno
		}
		pos += take
	}
	return int(n), 0
}

func (o *overlay) write(fd int, data []byte, off int64) syscall.Errno {
	o.mu.Lock()
	defer o.mu.Unlock()
	end := off + int64(len(data))
	for pos := off; pos < end; {
		c := pos / chunkBytes
		in := pos - c*chunkBytes
		take := min(chunkBytes-in, end-pos)
		chunk, ok := o.chunks[c]
		if !ok {
			chunk = make([]byte, chunkBytes)
			if in != 0 || take != chunkBytes {
				if errno := readBacking(fd, chunk, c*chunkBytes, min(o.validLen, o.size)); errno != 0 {
					return errno
				}
			}
			o.chunks[c] = chunk
		}
		copy(chunk[in:in+take], data[pos-off:pos-off+take])
		pos += take
	}
	if end > o.size {
		o.size = end
	}
	return 0
}

func (o *overlay) truncate(size int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if size < o.size {
		for c, chunk := range o.chunks {
			start := c * chunkBytes
			if start >= size {
				delete(o.chunks, c)
			} else if start+chunkBytes > size {
				clear(chunk[size-start:])
			}
		}
		if size < o.validLen {
			o.validLen = size
		}
	}
	o.size = size
}

// flush writes the overlay to the backing file (the caller forgets the overlay after).
func (o *overlay) flush(fd int) (int64, syscall.Errno) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if poweredOff.Load() {
		return 0, syscall.EIO // the power went while this fsync waited for the overlay
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return 0, fs.ToErrno(err)
	}
	if st.Size > o.validLen {
		if err := syscall.Ftruncate(fd, o.validLen); err != nil {
			return 0, fs.ToErrno(err)
		}
	}
	if err := syscall.Ftruncate(fd, o.size); err != nil {
		return 0, fs.ToErrno(err)
	}
	var written int64
	for _, c := range sortedChunks(o.chunks) {
		start := c * chunkBytes
		if start >= o.size {
			continue
		}
		data := o.chunks[c][:min(chunkBytes, o.size-start)]
		for done := 0; done < len(data); {
			n, err := syscall.Pwrite(fd, data[done:], start+int64(done))
			if err != nil {
				return written, fs.ToErrno(err)
			}
			done += n
		}
		written += int64(len(data))
	}
	o.chunks = map[int64][]byte{}
	o.validLen = o.size
	return written, 0
}

// syncFile makes the overlay of ino durable through fd (a descriptor of the backing file).
func syncFile(ino uint64, fd int) syscall.Errno {
	if poweredOff.Load() {
		return syscall.EIO
	}
	o := state.get(ino)
	if o == nil {
		return 0
	}
	written, errno := o.flush(fd)
	if errno != 0 {
		return errno
	}
	state.mu.Lock()
	// Forget it only if no write raced in after the flush (it would be in the same overlay).
	o.mu.Lock()
	if len(o.chunks) == 0 && o.validLen == o.size {
		state.remove(ino, o)
	}
	o.mu.Unlock()
	state.synced++
	state.syncedBytes += written
	state.mu.Unlock()
	return 0
}

// syncAll writes every overlay to its backing file (the clean shutdown).
func syncAll(root string) {
	state.mu.Lock()
	inos := make([]uint64, 0, len(state.overlays))
	for ino := range state.overlays {
		inos = append(inos, ino)
	}
	state.mu.Unlock()
	if len(inos) == 0 {
		return
	}
	want := map[uint64]bool{}
	for _, ino := range inos {
		want[ino] = true
	}
	_ = filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil || !info.Mode().IsRegular() {
			return nil
		}
		ino := info.Sys().(*syscall.Stat_t).Ino
		if !want[ino] {
			return nil
		}
		delete(want, ino)
		fd, err := syscall.Open(p, syscall.O_WRONLY|syscall.O_CLOEXEC, 0)
		if err != nil {
			return nil
		}
		defer syscall.Close(fd)
		if errno := syncFile(ino, fd); errno != 0 {
			fmt.Fprintf(os.Stderr, "lazyfs: clean shutdown: sync %s: %v\n", p, errno)
		}
		return nil
	})
}

// lazyFile is an open file: a descriptor of the backing file, used only for reads of data
// without an overlay and for fsync. It deliberately has no PassthroughFd method: FUSE
// passthrough would bypass the overlay.
type lazyFile struct {
	fd   int
	ino  uint64
	sync bool // opened with O_SYNC or O_DSYNC: every write is durable when it returns
}

var (
	_ fs.FileReader    = (*lazyFile)(nil)
	_ fs.FileWriter    = (*lazyFile)(nil)
	_ fs.FileFsyncer   = (*lazyFile)(nil)
	_ fs.FileFlusher   = (*lazyFile)(nil)
	_ fs.FileReleaser  = (*lazyFile)(nil)
	_ fs.FileGetattrer = (*lazyFile)(nil)
	_ fs.FileAllocater = (*lazyFile)(nil)
)

func (f *lazyFile) Read(ctx context.Context, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if o := state.get(f.ino); o != nil {
		n, errno := o.read(f.fd, buf, off)
		if errno != 0 {
			return nil, errno
		}
		return fuse.ReadResultData(buf[:n]), 0
	}
	n, err := syscall.Pread(f.fd, buf, off)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	return fuse.ReadResultData(buf[:n]), 0
}

func (f *lazyFile) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if poweredOff.Load() {
		return 0, syscall.EIO
	}
	o, errno := state.getOrCreate(f.ino, f.fd)
	if errno != 0 {
		return 0, errno
	}
	if errno := o.write(f.fd, data, off); errno != 0 {
		return 0, errno
	}
	if f.sync {
		if errno := syncFile(f.ino, f.fd); errno != 0 {
			return 0, errno
		}
	}
	return uint32(len(data)), 0
}

func (f *lazyFile) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	time.Sleep(fsyncDelay) // a disk's flush takes time: the window for a power loss
	return syncFile(f.ino, f.fd)
}

var fsyncDelay time.Duration

func (f *lazyFile) Flush(ctx context.Context) syscall.Errno { return 0 } // close: nothing durable

func (f *lazyFile) Release(ctx context.Context) syscall.Errno {
	return fs.ToErrno(syscall.Close(f.fd))
}

func (f *lazyFile) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	var st syscall.Stat_t
	if err := syscall.Fstat(f.fd, &st); err != nil {
		return fs.ToErrno(err)
	}
	out.FromStat(&st)
	overrideSize(&out.Attr)
	return 0
}

func (f *lazyFile) Allocate(ctx context.Context, off, size uint64, mode uint32) syscall.Errno {
	const keepSize = 0x01 // FALLOC_FL_KEEP_SIZE
	switch mode {
	case 0:
		o, errno := state.getOrCreate(f.ino, f.fd)
		if errno != 0 {
			return errno
		}
		o.mu.Lock()
		if end := int64(off + size); end > o.size {
			o.size = end // reads as zeros: validLen <= the old size
		}
		o.mu.Unlock()
		return 0
	case keepSize:
		return 0 // preallocation only: nothing a reader can see
	default:
		return syscall.EOPNOTSUPP
	}
}

func overrideSize(a *fuse.Attr) {
	if o := state.get(a.Ino); o != nil {
		o.mu.Lock()
		a.Size = uint64(o.size)
		a.Blocks = (a.Size + 511) / 512
		o.mu.Unlock()
	}
}

// lazyNode is a loopback node whose file data goes through the overlays.
type lazyNode struct {
	fs.LoopbackNode
}

var (
	_ fs.NodeOpener    = (*lazyNode)(nil)
	_ fs.NodeCreater   = (*lazyNode)(nil)
	_ fs.NodeGetattrer = (*lazyNode)(nil)
	_ fs.NodeSetattrer = (*lazyNode)(nil)
	_ fs.NodeStatxer   = (*lazyNode)(nil)
	_ fs.NodeUnlinker  = (*lazyNode)(nil)
	_ fs.NodeRenamer   = (*lazyNode)(nil)
	_ fs.NodeLookuper  = (*lazyNode)(nil)
	_ fs.NodeLinker    = (*lazyNode)(nil)
	_ fs.NodeFsyncer   = (*lazyNode)(nil)
)

func (n *lazyNode) backingPath() string {
	return filepath.Join(n.RootData.Path, n.Path(n.RootData.RootNode.EmbeddedInode()))
}

const syncFlags = syscall.O_SYNC | syscall.O_DSYNC

func openLazy(path string, flags uint32, mode uint32) (*lazyFile, bool, syscall.Errno) {
	_, statErr := os.Lstat(path)
	existed := statErr == nil
	// O_TRUNC is applied to the overlay, O_APPEND by the kernel (it knows the size), O_SYNC
	// and O_DSYNC here (lazyFile.sync); O_DIRECT would make the backing descriptor refuse
	// unaligned reads. The backing file is never opened write-only: reads of ranges without
	// unsynced data go to it.
	drop := syscall.O_TRUNC | syscall.O_APPEND | syscall.O_ACCMODE | syscall.O_DIRECT |
		syncFlags | fuse.FMODE_EXEC
	bflags := int(flags)&^drop | syscall.O_RDWR | syscall.O_CLOEXEC
	fd, err := syscall.Open(path, bflags, mode)
	if err != nil {
		return nil, false, fs.ToErrno(err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		syscall.Close(fd)
		return nil, false, fs.ToErrno(err)
	}
	f := &lazyFile{fd: fd, ino: st.Ino, sync: int(flags)&syncFlags != 0}
	if !existed {
		state.forget(st.Ino) // a reused inode number: nothing of the old file applies
	}
	if int(flags)&syscall.O_TRUNC != 0 && int(flags)&syscall.O_ACCMODE != syscall.O_RDONLY {
		o, errno := state.getOrCreate(st.Ino, fd)
		if errno != 0 {
			syscall.Close(fd)
			return nil, false, errno
		}
		o.truncate(0)
	}
	return f, existed, 0
}

func (n *lazyNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	f, _, errno := openLazy(n.backingPath(), flags&^syscall.O_CREAT, 0)
	if errno != 0 {
		return nil, 0, errno
	}
	return f, 0, 0
}

func (n *lazyNode) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if poweredOff.Load() {
		return nil, nil, 0, syscall.EIO
	}
	if errno := dirs.before(n.backingPath()); errno != 0 {
		return nil, nil, 0, errno
	}
	p := filepath.Join(n.backingPath(), name)
	f, _, errno := openLazy(p, flags|syscall.O_CREAT, mode)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(f.fd, &st); err != nil {
		syscall.Close(f.fd)
		return nil, nil, 0, fs.ToErrno(err)
	}
	child := &lazyNode{fs.LoopbackNode{RootData: n.RootData}}
	// As go-fuse's loopback Lookup names it: the backing directory is one file system, so
	// the inode number is st.Ino, and the generation comes from the birth time.
	gen := uint64(1)
	var stx unix.Statx_t
	if unix.Statx(f.fd, "", unix.AT_EMPTY_PATH, unix.STATX_BTIME, &stx) == nil &&
		stx.Mask&unix.STATX_BTIME != 0 && (stx.Btime.Sec != 0 || stx.Btime.Nsec != 0) {
		gen = uint64(stx.Btime.Sec)*1e9 + uint64(stx.Btime.Nsec)
	}
	ch := n.NewInode(ctx, child, fs.StableAttr{Mode: st.Mode, Ino: st.Ino, Gen: gen})
	out.FromStat(&st)
	overrideSize(&out.Attr)
	return ch, f, 0, 0
}

// Fsync: go-fuse asks the node before the handle; a file's fsync goes to its handle.
func (n *lazyNode) Fsync(ctx context.Context, f fs.FileHandle, flags uint32) syscall.Errno {
	if lf, ok := f.(*lazyFile); ok {
		return lf.Fsync(ctx, flags)
	}
	if d, ok := f.(*lazyDir); ok {
		return d.Fsyncdir(ctx, flags)
	}
	return syscall.ENOTSUP
}

// Lookup and Link answer with attributes too: the kernel takes the size from them.
func (n *lazyNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	ch, errno := n.LoopbackNode.Lookup(ctx, name, out)
	if errno == 0 {
		overrideSize(&out.Attr)
	}
	return ch, errno
}

func (n *lazyNode) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if poweredOff.Load() {
		return nil, syscall.EIO
	}
	if errno := dirs.before(n.backingPath()); errno != 0 {
		return nil, errno
	}
	ch, errno := n.LoopbackNode.Link(ctx, target, name, out)
	if errno == 0 {
		overrideSize(&out.Attr)
	}
	return ch, errno
}

func (n *lazyNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if errno := n.LoopbackNode.Getattr(ctx, f, out); errno != 0 {
		return errno
	}
	overrideSize(&out.Attr)
	return 0
}

func (n *lazyNode) Statx(ctx context.Context, f fs.FileHandle, flags, mask uint32, out *fuse.StatxOut) syscall.Errno {
	if errno := n.LoopbackNode.Statx(ctx, f, flags, mask, out); errno != 0 {
		return errno
	}
	if o := state.get(out.Statx.Ino); o != nil {
		o.mu.Lock()
		out.Statx.Size = uint64(o.size)
		out.Statx.Blocks = (out.Statx.Size + 511) / 512
		o.mu.Unlock()
	}
	return 0
}

func (n *lazyNode) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if size, ok := in.GetSize(); ok {
		var fd int
		if lf, ok := f.(*lazyFile); ok {
			fd = lf.fd
		} else {
			var err error
			fd, err = syscall.Open(n.backingPath(), syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
			if err != nil {
				return fs.ToErrno(err)
			}
			defer syscall.Close(fd)
		}
		var st syscall.Stat_t
		if err := syscall.Fstat(fd, &st); err != nil {
			return fs.ToErrno(err)
		}
		o, errno := state.getOrCreate(st.Ino, fd)
		if errno != 0 {
			return errno
		}
		o.truncate(int64(size))
		rest := *in
		rest.Valid &^= fuse.FATTR_SIZE
		in = &rest
	}
	if errno := n.LoopbackNode.Setattr(ctx, f, in, out); errno != 0 {
		return errno
	}
	overrideSize(&out.Attr)
	return 0
}

// lastLink returns the inode of path if it is a regular file with one link (removing that
// name frees the inode: its overlay must go with it).
func lastLink(path string) (uint64, bool) {
	var st syscall.Stat_t
	if err := syscall.Lstat(path, &st); err != nil {
		return 0, false
	}
	return st.Ino, st.Mode&syscall.S_IFMT == syscall.S_IFREG && st.Nlink == 1
}

func (n *lazyNode) Unlink(ctx context.Context, name string) syscall.Errno {
	if poweredOff.Load() {
		return syscall.EIO
	}
	if errno := dirs.before(n.backingPath()); errno != 0 {
		return errno
	}
	ino, last := lastLink(filepath.Join(n.backingPath(), name))
	if errno := n.LoopbackNode.Unlink(ctx, name); errno != 0 {
		return errno
	}
	if last {
		state.forget(ino)
	}
	return 0
}

func (n *lazyNode) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if poweredOff.Load() {
		return syscall.EIO
	}
	const exchange = 0x2 // RENAME_EXCHANGE: nothing is freed
	var ino uint64
	last := false
	if errno := dirs.before(n.backingPath()); errno != 0 {
		return errno
	}
	if np, ok := newParent.(*lazyNode); ok {
		if errno := dirs.before(np.backingPath()); errno != 0 {
			return errno
		}
		if flags&exchange == 0 {
			ino, last = lastLink(filepath.Join(np.backingPath(), newName))
		}
	}
	if errno := n.LoopbackNode.Rename(ctx, name, newParent, newName, flags); errno != 0 {
		return errno
	}
	if last {
		state.forget(ino)
	}
	return 0
}

func main() {
	seed := flag.Int64("seed", 1, "the seed of the torn power loss (SIGUSR2)")
	flag.DurationVar(&fsyncDelay, "fsync-delay", 0, "how long each fsync takes")
	flag.BoolVar(&dirs.enabled, "lazy-dirs", false,
		"names of regular files are durable only after an fsync of their directory")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: lazyfs [-seed N] [-fsync-delay D] [-lazy-dirs] BACKING_DIR MOUNT_POINT")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 2 {
		flag.Usage()
		os.Exit(2)
	}
	rng := rand.New(rand.NewSource(*seed))
	backing, err := filepath.Abs(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "lazyfs:", err)
		os.Exit(2)
	}
	root := &fs.LoopbackRoot{Path: backing}
	var st syscall.Stat_t
	if err := syscall.Stat(backing, &st); err != nil {
		fmt.Fprintln(os.Stderr, "lazyfs:", err)
		os.Exit(2)
	}
	root.Dev = uint64(st.Dev)
	if dirs.enabled {
		if err := dirs.open(backing); err != nil {
			fmt.Fprintln(os.Stderr, "lazyfs: stash:", err)
			os.Exit(2)
		}
	}
	root.NewNode = func(r *fs.LoopbackRoot, parent *fs.Inode, name string, st *syscall.Stat_t) fs.InodeEmbedder {
		return &lazyNode{fs.LoopbackNode{RootData: r}}
	}
	rootNode := &lazyNode{fs.LoopbackNode{RootData: root}}
	root.RootNode = rootNode
	timeout := time.Second
	server, err := fs.Mount(flag.Arg(1), rootNode, &fs.Options{
		EntryTimeout: &timeout,
		AttrTimeout:  &timeout,
		MountOptions: fuse.MountOptions{
			FsName:            backing,
			Name:              "lazyfs",
			DirectMount:       true,
			DirectMountStrict: true,
			MaxWrite:          1 << 20,
			// READDIRPLUS would answer with backing sizes: the kernel must ask Lookup.
			DisableReadDirPlus: true,
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "lazyfs: mount:", err)
		os.Exit(1)
	}
	fmt.Println("lazyfs: mounted") // the caller waits for this line
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		for sig := range signals {
			if sig == syscall.SIGUSR1 || sig == syscall.SIGUSR2 {
				if poweredOff.Load() {
					continue
				}
				torn := sig == syscall.SIGUSR2
				state.powerLoss(torn, rng)
				for _, c := range dirs.powerLoss() {
					fmt.Printf("lazyfs: directory entry lost: %s\n", c)
				}
				fmt.Printf("lazyfs: power loss: torn=%v seed=%d files=%d dropped_bytes=%d torn_bytes=%d\n",
					torn, *seed, state.droppedFiles, state.droppedBytes, state.tornBytes)
				continue
			}
			syncAll(backing) // nothing after a power loss: every sync fails
			break
		}
		if err := server.Unmount(); err != nil {
			// Still in use. Exiting closes /dev/fuse: the connection is aborted, nothing
			// more reaches the backing directory, and the caller unmounts the dead mount.
			fmt.Fprintln(os.Stderr, "lazyfs: unmount:", err)
			os.Exit(3)
		}
	}()
	server.Wait()
	dirs.close()
	fmt.Printf("lazyfs: exit: synced=%d synced_bytes=%d\n", state.synced, state.syncedBytes)
}
