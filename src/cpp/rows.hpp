// Row access and row parallelism shared by the row kernels (softmax_ce.cpp,
// distributions.cpp): contiguous rows are used in place, strided rows move through per-thread
// tiles; float64 lane accumulators; parallel_rows. Included by files compiled once per
// instruction set (the code lands in their namespace fastloss::<isa>::<anonymous>).
#pragma once

#include <cstdint>

#include "kernels.hpp"
#include "simd_math.hpp"

#ifndef FASTLOSS_ISA_NS
#error "include rows.hpp only from a file compiled with -DFASTLOSS_ISA_NS=<name>"
#endif

namespace fastloss {
namespace FASTLOSS_ISA_NS {
namespace {

// ---------------------------------------------------------------------------------------------
// Row access: contiguous rows are used in place; strided rows go through a scratch buffer.
// ---------------------------------------------------------------------------------------------
// Scratch rows come from thread_scratch (baseline code), not std::vector: no STL template may be
// instantiated here, or the linker could keep this file's AVX-512 copy for every caller.
// Slots: indices of thread_scratch buffers (kScratchSlots of them); each kernel file numbers
// its own. A read tile lives in the slot read_row is given, a write tile in the slot
// write_row is given (kWriteSlot by default).
constexpr int kWriteSlot = 2;
template <class T> T* scratch_row(int slot, int64_t n) {
  return static_cast<T*>(thread_scratch(slot, size_t(n) * sizeof(T)));
}

// Strided rows (class stride != 1, e.g. the class axis 0 of a C-order matrix) are moved in
// tiles of up to kTileRows consecutive rows that sit next to each other in memory: copying a
// tile class by class reads or writes whole cache lines of the array (row r + b of class j is
// next to row r + b + 1), where a row-by-row gather of a matrix column touches a new line for
// every element (12x slower than contiguous rows at 4096 x 4096). The tile's own rows are
// padded so that their starts fall in different L1 sets (a pitch of 64 bytes more than a
// multiple of 4 KB; rows of a power-of-two length would all compete for one set).
// A tile starts at the row that asks for it and stays within this thread's rows (set by
// parallel_rows) and within one block of n2 rows, where row r + b sits at offset(r) + b * step.
// Written rows collect in a write tile that is scattered when its last row is done, when a
// row outside it is written, or when the thread's rows end (parallel_rows). A row is gathered
// before it is processed and scattered after, so in-place use (grad == x) stays correct.
constexpr int64_t kTileRows = 64;
constexpr int64_t kTileBytes = int64_t(1) << 20;  // per tile and thread (a read and a write tile)
struct Tile {
  const void* base = nullptr;  // the array the tile belongs to; nullptr: empty
  void* buf = nullptr;         // n rows of n1 elements, row b at b * pitch
  int64_t r0 = 0, n = 0, pitch = 0;
  Layout3 L;
  uint64_t done = 0;  // write tiles: rows written (bit b: row r0 + b)
  bool write = false;  // a write tile (flushed by parallel_rows)
};
thread_local Tile t_tiles[kScratchSlots];
thread_local int64_t t_rows_end = 0;  // end of this thread's rows in parallel_rows

inline int64_t tile_step(const Layout3& L) { return L.n2 > 1 ? L.s2 : L.s0; }

// Copies between a tile (row b at buf + b * pitch) and the array (element j of row b at
// p[j * s1 + b * step]) in 8 x 8 blocks through a local array: both sides then move along
// cache lines, whatever order the compiler gives the outer loops (GCC interchanges a plain
// two-level copy into the line-hostile order).
template <class T>
void copy_tile(T* buf, int64_t pitch, T* p, int64_t s1, int64_t step, int64_t n1, int64_t n,
               bool to_array) {
  constexpr int64_t K = 8;
  for (int64_t j0 = 0; j0 < n1; j0 += K) {
    const int64_t jn = n1 - j0 < K ? n1 - j0 : K;
    for (int64_t b0 = 0; b0 < n; b0 += K) {
      const int64_t bn = n - b0 < K ? n - b0 : K;
      T blk[K][K];
      T* a = p + j0 * s1 + b0 * step;
      T* t = buf + b0 * pitch + j0;
      if (to_array) {
        for (int64_t b = 0; b < bn; ++b)
          for (int64_t j = 0; j < jn; ++j) blk[j][b] = t[b * pitch + j];
        for (int64_t j = 0; j < jn; ++j)
          for (int64_t b = 0; b < bn; ++b) a[j * s1 + b * step] = blk[j][b];
      } else {
        for (int64_t j = 0; j < jn; ++j)
          for (int64_t b = 0; b < bn; ++b) blk[j][b] = a[j * s1 + b * step];
        for (int64_t b = 0; b < bn; ++b)
          for (int64_t j = 0; j < jn; ++j) t[b * pitch + j] = blk[j][b];
      }
    }
  }
}

template <class T> Tile& new_tile(const void* base, const Layout3& L, int64_t r, int slot) {
  Tile& t = t_tiles[slot];
  const int64_t line = 64 / int64_t(sizeof(T)), page = 4096 / int64_t(sizeof(T));
  const int64_t padded = (L.n1 + line - 1) / line * line;
  t.pitch = padded + (page + line - padded % page) % page;
  int64_t n = kTileBytes / (t.pitch * int64_t(sizeof(T)));
  n = n < kTileRows ? n : kTileRows;
  if (n > line) n -= n % line;  // whole cache lines of the array per class
  const int64_t block_end = L.n2 > 1 ? r - r % L.n2 + L.n2 : L.n0;
  const int64_t end = block_end < t_rows_end ? block_end : t_rows_end;
  n = n < end - r ? n : end - r;
  t.n = n > 1 ? n : 1;
  t.base = base;
  t.L = L;
  t.r0 = r;
  t.done = 0;
  t.write = false;
  t.buf = thread_scratch(slot, size_t(t.n * t.pitch) * sizeof(T));
  return t;
}

template <class T> void flush_tile(Tile& t) {
  if (t.base && t.done) {
    const Layout3& L = t.L;
    T* p = static_cast<T*>(const_cast<void*>(t.base)) + L.offset(t.r0);
    const T* buf = static_cast<const T*>(t.buf);
    const int64_t n = t.n, step = tile_step(L), pitch = t.pitch;
    if (t.done == (n == 64 ? ~uint64_t(0) : (uint64_t(1) << n) - 1)) {
      copy_tile(const_cast<T*>(buf), pitch, p, L.s1, step, L.n1, n, true);
    } else {  // rows filled directly (ignored, NaN) keep their values
      for (int64_t b = 0; b < n; ++b)
        if (t.done >> b & 1)
          for (int64_t j = 0; j < L.n1; ++j) p[j * L.s1 + b * step] = buf[b * pitch + j];
    }
  }
  t.base = nullptr;
}

template <class T> const T* read_row(const T* base, const Layout3& L, int64_t r, int slot) {
  const T* p = base + L.offset(r);
  if (L.s1 == 1) return p;
  Tile& t = t_tiles[slot];
  if (t.base != base || r < t.r0 || r >= t.r0 + t.n) {
    new_tile<T>(base, L, r, slot);
    copy_tile(static_cast<T*>(t.buf), t.pitch, const_cast<T*>(p), L.s1, tile_step(L), L.n1,
              t.n, false);
  }
  return static_cast<const T*>(t.buf) + (r - t.r0) * t.pitch;
}

// Where to write row r: in place when contiguous, else a row of the write tile (then
// scatter_row).
template <class T> T* write_row(T* base, const Layout3& L, int64_t r, int slot = kWriteSlot) {
  if (L.s1 == 1) return base + L.offset(r);
  Tile& t = t_tiles[slot];
  if (t.base != base || r < t.r0 || r >= t.r0 + t.n) {
    flush_tile<T>(t);
    new_tile<T>(base, L, r, slot).write = true;
  }
  return static_cast<T*>(t.buf) + (r - t.r0) * t.pitch;
}

template <class T>
void scatter_row(T* base, const Layout3& L, int64_t r, const T* row, int slot = kWriteSlot) {
  if (L.s1 == 1) return;
  Tile& t = t_tiles[slot];
  (void)base;
  (void)row;  // row is the tile's row r (write_row)
  t.done |= uint64_t(1) << (r - t.r0);
  if (r == t.r0 + t.n - 1) flush_tile<T>(t);
}

template <class T> void fill_row(T* base, const Layout3& L, int64_t r, T value) {
  T* p = base + L.offset(r);
  for (int64_t j = 0; j < L.n1; ++j) p[j * L.s1] = value;
}

// Float64 lane accumulators of partial sums. A softmax sum is accumulated as float partials of
// at most 4 terms (all terms >= 0, so each partial's relative error is <= 3 ulp, and so is the
// total's), which are widened and added here once per chunk of 8 vectors: widening every vector
// to float64 would halve the throughput of the exp pass.
template <class T> struct Acc;
template <> struct Acc<float> {
  f64v lo{}, hi{};
  void add_partial(f32v part) {
    f64v l, h;
    widen(part, l, h);
    lo += l;
    hi += h;
  }
  double total() const { return hsum(lo + hi); }
};
template <> struct Acc<double> {
  f64v a{};
  void add_partial(f64v v) { a += v; }
  double total() const { return hsum(a); }
};

// Outputs at least this large bypass the caches (non-temporal stores): a larger output would
// not stay cached anyway, and write-allocate would read it first.
constexpr int64_t kStreamBytes = int64_t(32) << 20;

// fn(r0, r1) for consecutive spans [r0, r1) of at most G rows that make up each thread's
// contiguous range of rows (as schedule(static)); a span ends where the thread's range does.
// row_work: a row's work for threads_for (its elements, times kExpWork where each takes an exp
// or a log).
// S: the type of the written arrays (their write tiles are flushed at the end, see read_row).
template <class S, class Fn>
void parallel_row_spans(int64_t rows, int64_t row_work, int64_t G, Fn&& fn) {
  const int nt = threads_for(rows * (row_work > 1 ? row_work : 1), rows);
  parallel_for(nt, [&](int64_t t, int64_t n) {
    const int64_t lo = rows * t / n, hi = rows * (t + 1) / n;
    for (Tile& tile : t_tiles) tile.base = nullptr;  // (tiles of an earlier call)
    t_rows_end = hi;
    for (int64_t r = lo; r < hi; r += G) fn(r, r + G < hi ? r + G : hi);
    for (Tile& tile : t_tiles)
      if (tile.write) flush_tile<S>(tile);
    stream_fence();  // make this thread's non-temporal stores visible before returning
  });
}

// fn(r) for every row, each thread on one contiguous range of rows.
template <class S, class Fn> void parallel_rows(int64_t rows, int64_t row_work, Fn&& fn) {
  parallel_row_spans<S>(rows, row_work, 1, [&](int64_t r, int64_t) { fn(r); });
}

}  // namespace
}  // namespace FASTLOSS_ISA_NS
}  // namespace fastloss
