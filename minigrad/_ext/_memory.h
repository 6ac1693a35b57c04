/* A small cache of large array buffers, as NumPy's data allocator (PyDataMem_Handler).

   glibc serves allocations above its largest mmap threshold (32 MiB: the CPU backend raises the
   threshold that far, see backends/cpu.py) with fresh mmaps, handed back to the kernel when freed,
   so a training step that frees and re-allocates the same large arrays (a float64 BatchNorm2d
   output of 51 MB) pays a page fault for every 4 KiB of them, inside the kernels, on every step.
   This allocator keeps up to MG_CACHE_BLOCKS freed blocks of at least MG_CACHE_MIN bytes (at most
   mg_cache_cap bytes together) and hands one back to the next request of exactly its size; smaller
   requests, zeroed ones (calloc: the kernel's fresh pages are already zero) and everything else go
   to malloc. NumPy gives the size back on free, so no header is needed. */
#ifndef MINIGRAD_MEMORY_H
#define MINIGRAD_MEMORY_H

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <numpy/ndarraytypes.h>

#define MG_CACHE_BLOCKS 8
#define MG_CACHE_MIN ((size_t)32 << 20)

static pthread_mutex_t mg_cache_lock = PTHREAD_MUTEX_INITIALIZER;
static void* mg_cache_ptr[MG_CACHE_BLOCKS];
static size_t mg_cache_size[MG_CACHE_BLOCKS];
static size_t mg_cache_bytes = 0, mg_cache_cap = (size_t)256 << 20;
static size_t mg_cache_hits = 0, mg_cache_misses = 0;

static void* mg_cache_malloc(void* ctx, size_t size) {
    (void)ctx;
    if (size >= MG_CACHE_MIN) {
        void* p = NULL;
        pthread_mutex_lock(&mg_cache_lock);
        for (int i = 0; i < MG_CACHE_BLOCKS; i++)
            if (mg_cache_ptr[i] && mg_cache_size[i] == size) {
                p = mg_cache_ptr[i];
                mg_cache_ptr[i] = NULL;
                mg_cache_bytes -= size;
                break;
            }
        if (p) mg_cache_hits++; else mg_cache_misses++;
        pthread_mutex_unlock(&mg_cache_lock);
        if (p) return p;
    }
    return malloc(size);
}

static void* mg_cache_calloc(void* ctx, size_t nelem, size_t elsize) {
    (void)ctx;
    return calloc(nelem, elsize);
}

static void* mg_cache_realloc(void* ctx, void* ptr, size_t new_size) {
    (void)ctx;
    return realloc(ptr, new_size);
}

static void mg_cache_free(void* ctx, void* ptr, size_t size) {
    (void)ctx;
    if (ptr && size >= MG_CACHE_MIN) {
        void* evict = ptr;
        pthread_mutex_lock(&mg_cache_lock);
        if (size <= mg_cache_cap) {
            /* room for it: a free slot, after evicting other sizes while the cap is exceeded */
            for (int i = 0; i < MG_CACHE_BLOCKS && mg_cache_bytes + size > mg_cache_cap; i++)
                if (mg_cache_ptr[i]) {
                    free(mg_cache_ptr[i]);
                    mg_cache_bytes -= mg_cache_size[i];
                    mg_cache_ptr[i] = NULL;
                }
            for (int i = 0; i < MG_CACHE_BLOCKS; i++)
                if (!mg_cache_ptr[i]) {
                    mg_cache_ptr[i] = ptr;
                    mg_cache_size[i] = size;
                    mg_cache_bytes += size;
                    evict = NULL;
                    break;
                }
        }
        pthread_mutex_unlock(&mg_cache_lock);
        free(evict);  /* NULL when cached */
        return;
    }
    free(ptr);
}

/* Return every cached block to the system. */
static void mg_cache_clear(void) {
    pthread_mutex_lock(&mg_cache_lock);
    for (int i = 0; i < MG_CACHE_BLOCKS; i++) {
        free(mg_cache_ptr[i]);
        mg_cache_ptr[i] = NULL;
    }
    mg_cache_bytes = 0;
    pthread_mutex_unlock(&mg_cache_lock);
}

static PyDataMem_Handler mg_cache_handler = {
    "minigrad_large_array_cache", 1,
    {NULL, mg_cache_malloc, mg_cache_calloc, mg_cache_realloc, mg_cache_free}};

#endif /* MINIGRAD_MEMORY_H */
