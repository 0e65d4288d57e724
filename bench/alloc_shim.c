/* bench/alloc_shim.c — counts malloc calls and realloc calls by the power of two of their size,
 * and the bytes realloc copied (a block that moved); LD_PRELOADed by bench/allocs.sh, which builds
 * it. Written to $SHIM_OUT when the process exits. Not thread-exact for the counts' order, only
 * their totals (atomics). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

static void *(*real_realloc)(void *, size_t);
static void *(*real_malloc)(size_t);
static _Atomic long mallocs[64], kept[64], moved[64], copied;

static int log2_of(size_t n) { int l = 0; while (n > 1) { n >>= 1; l++; } return l; }

void *malloc(size_t n) {
  if (!real_malloc) real_malloc = dlsym(RTLD_NEXT, "malloc");
  atomic_fetch_add(&mallocs[log2_of(n)], 1);
  return real_malloc(n);
}

void *realloc(void *p, size_t n) {
  if (!real_realloc) real_realloc = dlsym(RTLD_NEXT, "realloc");
  size_t old = p ? malloc_usable_size(p) : 0;
  void *q = real_realloc(p, n);
  if (p && q && q != p) {
    atomic_fetch_add(&moved[log2_of(n)], 1);
    atomic_fetch_add(&copied, (long)(old < n ? old : n));
  } else {
    atomic_fetch_add(&kept[log2_of(n)], 1);
  }
  return q;
}

__attribute__((destructor)) static void report(void) {
  const char *path = getenv("SHIM_OUT");
  FILE *out = path ? fopen(path, "w") : NULL;
  if (!out) return;
  for (int i = 0; i < 64; i++)
    if (mallocs[i] || kept[i] || moved[i])
      fprintf(out, "%d %ld %ld %ld\n", i, mallocs[i], kept[i], moved[i]);
  fprintf(out, "copied %ld\n", copied);
  fclose(out);
}
