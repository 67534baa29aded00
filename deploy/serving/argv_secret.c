/*
 * Keeps a secret out of a program's /proc/<pid>/cmdline: an LD_PRELOAD library for tritonserver.
 *
 * tritonserver reads its admin key only from its command line (--http-restricted-api,
 * --grpc-restricted-protocol; triton-inference-server/server#7183), and /proc/<pid>/cmdline is
 * readable by every user of the host. bge-triton therefore writes the placeholder
 * "@BGE_ARGV_SECRET@" where the key belongs, puts the key in the environment variable
 * BGE_ARGV_SECRET (like any secret from the environment, readable only by the same user in
 * /proc/<pid>/environ) and preloads this library.
 *
 * glibc runs a preloaded library's constructors before main with main's own argc, argv and envp.
 * This one points every argv element holding the placeholder at a heap copy with the key in its
 * place; the strings /proc/<pid>/cmdline shows are left as they were. It then blanks the key in
 * the environment block and removes BGE_ARGV_SECRET from the environment, and gives LD_PRELOAD back
 * the value it had before bge-triton added this library (BGE_ARGV_SECRET_PRELOAD; unset if empty),
 * so the processes tritonserver starts (its Python backend stubs) inherit neither.
 *
 * A placeholder with no key set would leave a well-known string as the key: the program is
 * stopped instead (exit 78, EX_CONFIG), with one line saying why.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char PLACEHOLDER[] = "@BGE_ARGV_SECRET@";
static const char VARIABLE[] = "BGE_ARGV_SECRET";
static const char PRELOAD_BEFORE[] = "BGE_ARGV_SECRET_PRELOAD";

/* `arg` with every placeholder replaced by `secret`, on the heap; NULL if out of memory. */
static char *substitute(const char *arg, const char *secret) {
    size_t placeholder_len = sizeof(PLACEHOLDER) - 1, secret_len = strlen(secret), count = 0;
    for (const char *at = strstr(arg, PLACEHOLDER); at != NULL; at = strstr(at + placeholder_len, PLACEHOLDER)) {
        count++;
    }
    char *out = malloc(strlen(arg) + count * secret_len + 1);
    if (out == NULL) {
        return NULL;
    }
    char *write = out;
    const char *read = arg;
    for (const char *at = strstr(read, PLACEHOLDER); at != NULL; at = strstr(read, PLACEHOLDER)) {
        memcpy(write, read, (size_t)(at - read));
        write += at - read;
        memcpy(write, secret, secret_len);
        write += secret_len;
        read = at + placeholder_len;
    }
    strcpy(write, read);
    return out;
}

static void refuse(const char *why) {
    static const char prefix[] = "bge argv_secret: ";
    ssize_t ignored = write(STDERR_FILENO, prefix, sizeof(prefix) - 1);
    ignored = write(STDERR_FILENO, why, strlen(why));
    ignored = write(STDERR_FILENO, "\n", 1);
    (void)ignored;
    _exit(78);
}

__attribute__((constructor)) static void bge_argv_secret(int argc, char **argv, char **envp) {
    (void)envp;
    char *secret = getenv(VARIABLE);
    for (int i = 0; i < argc; i++) {
        if (strstr(argv[i], PLACEHOLDER) == NULL) {
            continue;
        }
        if (secret == NULL || secret[0] == '\0') {
            refuse("a command-line argument holds the secret's placeholder but BGE_ARGV_SECRET is not set");
        }
        char *replaced = substitute(argv[i], secret);
        if (replaced == NULL) {
            refuse("out of memory");
        }
        argv[i] = replaced;
    }
    if (secret != NULL) {
        memset(secret, 'x', strlen(secret));  /* the environment block that /proc/<pid>/environ shows */
        unsetenv(VARIABLE);
    }
    const char *before = getenv(PRELOAD_BEFORE);
    if (before != NULL && before[0] != '\0') {
        setenv("LD_PRELOAD", before, 1);
    } else {
        unsetenv("LD_PRELOAD");
    }
    unsetenv(PRELOAD_BEFORE);
}
