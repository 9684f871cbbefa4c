import GraftELF

/// Prototypes of common libc/POSIX functions, for hooks on a libc without debug information (as
/// ltrace's `libc.so.conf`). Written as C declarations; the parameter types name how a value is
/// shown: `const char *` a string, `open_flags` `O_RDONLY|O_CLOEXEC`, `buffer:N` a byte buffer of
/// the length in parameter N. An output buffer holds nothing at the call: `output:ret` (`read`'s:
/// as many bytes as the call returns) and `output:str` (`getcwd`'s: a string once the call succeeded)
/// are shown as pointers at the call and read at the return (`OutputArguments`).
public enum LibcPrototypes {
    static let declarations: [String] = [
        // Files and descriptors.
        "int open(const char *path, open_flags flags, mode_t mode)",
        "int open64(const char *path, open_flags flags, mode_t mode)",
        "int openat(int dirfd, const char *path, open_flags flags, mode_t mode)",
        "int openat64(int dirfd, const char *path, open_flags flags, mode_t mode)",
        "int creat(const char *path, mode_t mode)",
        "int close(int fd)",
        "ssize_t read(int fd, output:ret buf, size_t count)",
        "ssize_t write(int fd, buffer:2 buf, size_t count)",
        "ssize_t pread(int fd, output:ret buf, size_t count, off_t offset)",
        "ssize_t pread64(int fd, output:ret buf, size_t count, off_t offset)",
        "ssize_t readlink(const char *path, output:ret buf, size_t size)",
        "ssize_t readlinkat(int dirfd, const char *path, output:ret buf, size_t size)",
        "char *getcwd(output:str buf, size_t size)",
        "char *fgets(output:str s, int size, void *stream)",
        "int gethostname(output:str name, size_t size)",
        "ssize_t pwrite(int fd, buffer:2 buf, size_t count, off_t offset)",
        "ssize_t pwrite64(int fd, buffer:2 buf, size_t count, off_t offset)",
        "off_t lseek(int fd, off_t offset, whence whence)",
        "off_t lseek64(int fd, off_t offset, whence whence)",
        "int dup(int fd)",
        "int dup2(int oldfd, int newfd)",
        "int pipe(int *fds)",
        "int unlink(const char *path)",
        "int rename(const char *from, const char *to)",
        "int mkdir(const char *path, mode_t mode)",
        "int rmdir(const char *path)",
        "int chdir(const char *path)",
        "int access(const char *path, int mode)",
        "int stat(const char *path, void *buf)",
        "int lstat(const char *path, void *buf)",
        "int fstat(int fd, void *buf)",
        "void *opendir(const char *path)",
        "int closedir(void *dir)",
        "void *fopen(const char *path, const char *mode)",
        "void *fopen64(const char *path, const char *mode)",
        "void *fdopen(int fd, const char *mode)",
        "int fclose(void *stream)",
        "size_t fread(void *ptr, size_t size, size_t nmemb, void *stream)",
        "size_t fwrite(const void *ptr, size_t size, size_t nmemb, void *stream)",
        "int fputs(const char *s, void *stream)",
        "int puts(const char *s)",
        "int fflush(void *stream)",
        "int printf(const char *format, ...)",
        "int fprintf(void *stream, const char *format, ...)",
        "int sprintf(output:str str, const char *format, ...)",
        "int snprintf(output:str str, size_t size, const char *format, ...)",
        // Memory.
        "void *malloc(size_t size)",
        "void *calloc(size_t nmemb, size_t size)",
        "void *realloc(void *ptr, size_t size)",
        "void *reallocarray(void *ptr, size_t nmemb, size_t size)",
        "void free(void *ptr)",
        "int posix_memalign(void *memptr, size_t alignment, size_t size)",
        "void *aligned_alloc(size_t alignment, size_t size)",
        "void *mmap(void *addr, size_t length, mmap_prot prot, mmap_flags flags, int fd, off_t offset)",
        "void *mmap64(void *addr, size_t length, mmap_prot prot, mmap_flags flags, int fd, off_t offset)",
        "int munmap(void *addr, size_t length)",
        "int mprotect(void *addr, size_t length, mmap_prot prot)",
        // Strings and bytes.
        "size_t strlen(const char *s)",
        "size_t strnlen(const char *s, size_t maxlen)",
        "int strcmp(const char *s1, const char *s2)",
        "int strncmp(const char *s1, const char *s2, size_t n)",
        "int strcasecmp(const char *s1, const char *s2)",
        "int strncasecmp(const char *s1, const char *s2, size_t n)",
        "char *strcpy(output:str dest, const char *src)",
        "char *strncpy(void *dest, const char *src, size_t n)",
        "char *stpcpy(void *dest, const char *src)",
        "char *strcat(char *dest, const char *src)",
        "char *strncat(char *dest, const char *src, size_t n)",
        "char *strchr(const char *s, char c)",
        "char *strrchr(const char *s, char c)",
        "char *strstr(const char *haystack, const char *needle)",
        "char *strdup(const char *s)",
        "char *strndup(const char *s, size_t n)",
        "char *strtok(char *str, const char *delim)",
        "long strtol(const char *s, void *end, int base)",
        "unsigned long strtoul(const char *s, void *end, int base)",
        "int atoi(const char *s)",
        "long atol(const char *s)",
        "void *memcpy(void *dest, buffer:2 src, size_t n)",
        "void *memmove(void *dest, buffer:2 src, size_t n)",
        "void *memset(void *s, char c, size_t n)",
        "int memcmp(buffer:2 s1, buffer:2 s2, size_t n)",
        "void *memchr(buffer:2 s, char c, size_t n)",
        "char *getenv(const char *name)",
        "int setenv(const char *name, const char *value, int overwrite)",
        "int unsetenv(const char *name)",
        // Sockets.
        "int socket(address_family domain, socket_type type, int protocol)",
        "int connect(int fd, sockaddr addr, socklen_t addrlen)",
        "int bind(int fd, sockaddr addr, socklen_t addrlen)",
        "int listen(int fd, int backlog)",
        "int accept(int fd, void *addr, void *addrlen)",
        "int accept4(int fd, void *addr, void *addrlen, socket_type flags)",
        "ssize_t send(int fd, buffer:2 buf, size_t len, msg_flags flags)",
        "ssize_t recv(int fd, output:ret buf, size_t len, msg_flags flags)",
        "ssize_t sendto(int fd, buffer:2 buf, size_t len, msg_flags flags, sockaddr addr, socklen_t addrlen)",
        "ssize_t recvfrom(int fd, output:ret buf, size_t len, msg_flags flags, void *addr, void *addrlen)",
        "int shutdown(int fd, int how)",
        "int getaddrinfo(const char *node, const char *service, void *hints, void *res)",
        // Processes, signals, time, loading.
        "int kill(pid_t pid, signal sig)",
        "int raise(signal sig)",
        "int system(const char *command)",
        "int execve(const char *path, void *argv, void *envp)",
        "int execvp(const char *file, void *argv)",
        "pid_t fork()",
        "pid_t getpid()",
        "void exit(int status)",
        "void _exit(int status)",
        "unsigned int sleep(unsigned int seconds)",
        "int usleep(unsigned int usec)",
        "int nanosleep(void *req, void *rem)",
        "void *dlopen(const char *file, int flags)",
        "void *dlsym(void *handle, const char *symbol)",
        "int pthread_mutex_lock(void *mutex)",
        "int pthread_mutex_unlock(void *mutex)",
        "int pthread_create(void *thread, void *attr, void *start, void *arg)",
    ]

    /// Type spellings the declarations use.
    static let types: [String: DebugType.Kind] = [
        "int": .signed(4), "long": .signed(8), "ssize_t": .signed(8), "off_t": .signed(8), "pid_t": .signed(4),
        "unsigned int": .unsigned(4), "unsigned long": .unsigned(8), "size_t": .unsigned(8), "socklen_t": .unsigned(4),
        "char": .character, "const char *": .string, "char *": .string, "void *": .pointer, "const void *": .pointer, "int *": .pointer,
        "mode_t": .decoded("mode", size: 4), "open_flags": .decoded("open_flags", size: 4), "whence": .decoded("whence", size: 4),
        "mmap_prot": .decoded("mmap_prot", size: 4), "mmap_flags": .decoded("mmap_flags", size: 4),
        "address_family": .decoded("address_family", size: 4), "socket_type": .decoded("socket_type", size: 4),
        "msg_flags": .decoded("msg_flags", size: 4), "signal": .decoded("signal", size: 4), "sockaddr": .decoded("sockaddr", size: 8),
    ]

    private static let table: [String: FunctionSignature] = {
        var table: [String: FunctionSignature] = [:]
        for declaration in declarations {
            if let signature = parse(declaration) { table[signature.name] = signature }
        }
        return table
    }()

    /// The prototype of `name` (a symbol name: `open`, `open@@GLIBC_2.2.5`, `__open64`, `__libc_malloc`).
    public static func signature(for name: String) -> FunctionSignature? {
        var bare = Substring(name.prefix { $0 != "@" })
        if let found = table[String(bare)] { return found }
        for prefix in ["__libc_", "__"] where bare.hasPrefix(prefix) { bare = bare.dropFirst(prefix.count) }
        for suffix in ["_nocancel", "_chk"] where bare.hasSuffix(suffix) { bare = bare.dropLast(suffix.count) }
        return table[String(bare)]
    }

    /// `size_t strlen(const char *s)` → a signature, or nil if a type is unknown.
    static func parse(_ declaration: String) -> FunctionSignature? {
        guard let open = declaration.firstIndex(of: "("), declaration.hasSuffix(")") else { return nil }
        let head = declaration[..<open]
        // The name is the last word; a `*` before it belongs to the result type.
        var nameStart = head.endIndex
        while nameStart > head.startIndex, head[head.index(before: nameStart)].isLetter || head[head.index(before: nameStart)].isNumber || head[head.index(before: nameStart)] == "_" {
            nameStart = head.index(before: nameStart)
        }
        let name = String(head[nameStart...])
        let resultSpelling = head[..<nameStart].trimmingSpaces
        var result: DebugType?
        if resultSpelling != "void" {
            guard let kind = types[resultSpelling] else { return nil }
            result = DebugType(resultSpelling, kind)
        }
        let list = declaration[declaration.index(after: open)..<declaration.index(before: declaration.endIndex)]
        var parameters: [DebugParameter] = []
        var variadic = false
        for part in list.split(separator: ",") {
            let text = Substring(part).trimmingSpaces
            if text == "..." { variadic = true; continue }
            guard let space = text.lastIndex(where: { $0 == " " || $0 == "*" }) else { return nil }
            let parameterName = String(text[text.index(after: space)...])
            let spelling = text[...space].trimmingSpaces
            if spelling.hasPrefix("buffer:"), let length = Int(spelling.dropFirst(7)) {
                parameters.append(DebugParameter(name: parameterName, type: DebugType("const void *", .decoded("buffer:\(length)", size: 8))))
                continue
            }
            if spelling == "output:ret" || spelling == "output:str" {
                parameters.append(DebugParameter(name: parameterName, type: DebugType(spelling == "output:str" ? "char *" : "void *", .decoded(spelling, size: 8))))
                continue
            }
            guard let kind = types[spelling] else { return nil }
            let shown: String
            switch kind {
            case .decoded(let decoder, _) where !spelling.hasSuffix("_t"): shown = decoder == "sockaddr" ? "const struct sockaddr *" : "int"
            default: shown = spelling
            }
            parameters.append(DebugParameter(name: parameterName, type: DebugType(shown, kind)))
        }
        return FunctionSignature(name: name, parameters: parameters, result: result, variadic: variadic, source: "libc prototype")
    }
}

extension Substring {
    var trimmingSpaces: String {
        String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
    }
}
