package audit

import (
	"context"
	"encoding/binary"
	"fmt"
	"strings"

	"golang.org/x/mod/sumdb/tlog"
)

// TileHeight is the C2SP tlog-tiles tile height: 2^8 = 256 hashes a tile.
const TileHeight = 8

// ParseTilePath parses a C2SP tlog-tiles path relative to the log prefix:
// "tile/<L>/<N>[.p/<W>]" for Merkle tiles and "tile/entries/<N>[.p/<W>]"
// for entry bundles (returned with L = -1). The C2SP layout is the
// golang.org/x/mod/sumdb/tlog one with the height fixed at 8 and left out,
// so the parsing is tlog's.
func ParseTilePath(path string) (tlog.Tile, error) {
	rest, ok := strings.CutPrefix(path, "tile/")
	if !ok {
		return tlog.Tile{}, fmt.Errorf("tile path %q: must start with tile/", path)
	}
	if r, isEntries := strings.CutPrefix(rest, "entries/"); isEntries {
		rest = "data/" + r
	}
	t, err := tlog.ParseTilePath(fmt.Sprintf("tile/%d/%s", TileHeight, rest))
	if err != nil {
		return tlog.Tile{}, fmt.Errorf("tile path %q: %w", path, err)
	}
	return t, nil
}

// TilePath formats t as a C2SP tlog-tiles path (the inverse of ParseTilePath).
func TilePath(t tlog.Tile) string {
	p := strings.TrimPrefix(t.Path(), fmt.Sprintf("tile/%d/", TileHeight))
	if rest, ok := strings.CutPrefix(p, "data/"); ok {
		return "tile/entries/" + rest
	}
	return "tile/" + p
}

// tileInTree reports whether every hash (or entry) of t exists in a tree of
// size treeSize.
func tileInTree(t tlog.Tile, treeSize int64) bool {
	level := t.L
	if level < 0 {
		level = 0
	}
	shift := uint(level * t.H)
	if shift >= 62 {
		return false
	}
	last := t.N<<uint(t.H) + int64(t.W) // one past the last node at level L*H
	return last > 0 && last <= treeSize>>shift && last<<shift <= treeSize
}

// ReadTile returns the contents of a C2SP tile: the concatenated hashes of
// a Merkle tile, or the length-prefixed entries of an entry bundle. The
// tile must lie within the committed tree.
func (l *Log) ReadTile(ctx context.Context, t tlog.Tile) ([]byte, error) {
	if t.H != TileHeight {
		return nil, fmt.Errorf("tile height %d: %w", t.H, ErrNotFound)
	}
	size, err := l.Size(ctx)
	if err != nil {
		return nil, err
	}
	if !tileInTree(t, size) {
		return nil, fmt.Errorf("tile %s beyond tree size %d: %w", TilePath(t), size, ErrNotFound)
	}
	if t.L >= 0 {
		data, err := tlog.ReadTileData(t, l.reader(ctx))
		if err != nil {
			return nil, fmt.Errorf("read tile %s: %w", TilePath(t), err)
		}
		return data, nil
	}
	start := t.N << uint(t.H)
	entries, err := l.Entries(ctx, start, t.W)
	if err != nil {
		return nil, err
	}
	var out []byte
	for i, e := range entries {
		if e.Index != start+int64(i) {
			return nil, fmt.Errorf("%w: entry %d is missing", ErrCorrupt, start+int64(i))
		}
		out = binary.BigEndian.AppendUint16(out, uint16(len(e.Data)))
		out = append(out, e.Data...)
	}
	if len(entries) != t.W {
		return nil, fmt.Errorf("%w: entry %d is missing", ErrCorrupt, start+int64(len(entries)))
	}
	return out, nil
}

// SplitEntryBundle splits a C2SP entry bundle into its entries.
func SplitEntryBundle(b []byte) ([][]byte, error) {
	var out [][]byte
	for len(b) > 0 {
		if len(b) < 2 {
			return nil, fmt.Errorf("entry bundle: truncated length after %d entries", len(out))
		}
		n := int(binary.BigEndian.Uint16(b))
		b = b[2:]
		if len(b) < n {
			return nil, fmt.Errorf("entry bundle: entry %d wants %d bytes, %d left", len(out), n, len(b))
		}
		out = append(out, b[:n])
		b = b[n:]
	}
	return out, nil
}
