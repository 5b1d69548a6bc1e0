/* A small static inotify watcher for hot-reload tests (tests/support/watcher_image.py).
 *
 * inotify-watch DIR...: watches each DIR (not recursively) for every event and
 * prints one line per event, "MASK PATH", MASK being names such as
 * IN_MODIFY|IN_ISDIR and PATH the watched DIR joined with the event's name.
 * "ready" is printed once every watch is in place.
 */
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

static const struct { unsigned mask; const char *name; } NAMES[] = {
    {IN_ACCESS, "IN_ACCESS"}, {IN_MODIFY, "IN_MODIFY"}, {IN_ATTRIB, "IN_ATTRIB"},
    {IN_CLOSE_WRITE, "IN_CLOSE_WRITE"}, {IN_CLOSE_NOWRITE, "IN_CLOSE_NOWRITE"}, {IN_OPEN, "IN_OPEN"},
    {IN_MOVED_FROM, "IN_MOVED_FROM"}, {IN_MOVED_TO, "IN_MOVED_TO"}, {IN_CREATE, "IN_CREATE"},
    {IN_DELETE, "IN_DELETE"}, {IN_DELETE_SELF, "IN_DELETE_SELF"}, {IN_MOVE_SELF, "IN_MOVE_SELF"},
    {IN_UNMOUNT, "IN_UNMOUNT"}, {IN_Q_OVERFLOW, "IN_Q_OVERFLOW"}, {IN_IGNORED, "IN_IGNORED"},
    {IN_ISDIR, "IN_ISDIR"},
};

int main(int argc, char **argv) {
    int fd = inotify_init();
    char *dirs[64] = {0};
    if (fd < 0) { perror("inotify_init"); return 1; }
    for (int i = 1; i < argc; i++) {
        int wd = inotify_add_watch(fd, argv[i], IN_ALL_EVENTS);
        if (wd < 0 || wd >= 64) { perror(argv[i]); return 1; }
        dirs[wd] = argv[i];
    }
    printf("ready\n");
    fflush(stdout);
    char buf[65536] __attribute__((aligned(8)));
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0) { perror("read"); return 1; }
        for (char *p = buf; p < buf + n;) {
            struct inotify_event *ev = (struct inotify_event *)p;
            int first = 1;
            for (size_t k = 0; k < sizeof NAMES / sizeof NAMES[0]; k++)
                if (ev->mask & NAMES[k].mask) {
                    printf("%s%s", first ? "" : "|", NAMES[k].name);
                    first = 0;
                }
            const char *dir = ev->wd >= 0 && ev->wd < 64 && dirs[ev->wd] ? dirs[ev->wd] : "?";
            printf(" %s%s%s\n", dir, ev->len ? "/" : "", ev->len ? ev->name : "");
            p += sizeof *ev + ev->len;
        }
        fflush(stdout);
    }
}
