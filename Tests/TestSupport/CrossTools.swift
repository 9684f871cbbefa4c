import Glibc

/// The cross compilers and emulators the file-patch victims need (TestTargets/Makefile's file_price_*,
/// installed by `make deps`). Checked on PATH without building anything, so a test can be disabled
/// with a reason when one is absent.
public enum CrossTools {
    /// `name` is an executable file in a directory of $PATH.
    public static func installed(_ name: String) -> Bool { path(of: name) != nil }

    /// Where $PATH finds the executable `name`.
    public static func path(of name: String) -> String? {
        let directories = getenv("PATH").map { String(cString: $0) } ?? "/usr/bin:/bin"
        return directories.split(separator: ":").map { "\($0)/\(name)" }.first { access($0, X_OK) == 0 }
    }

    /// The compiler that builds `file_price_<isa>` (x86_64: the host's cc).
    public static func compiler(for isa: String) -> String {
        switch isa {
        case "i386": return "i686-linux-gnu-gcc"
        case "arm", "thumb": return "arm-linux-gnueabihf-gcc"
        case "aarch64": return "aarch64-linux-gnu-gcc"
        default: return "cc"
        }
    }

    /// What runs a program of `isa` here: nothing (native), qemu-arm or qemu-aarch64.
    public static func emulator(for isa: String) -> String? {
        switch isa {
        case "arm", "thumb": return "qemu-arm"
        case "aarch64": return "qemu-aarch64"
        default: return nil
        }
    }

    /// The compiler and the emulator of `isa` are installed.
    public static func canBuildAndRun(_ isa: String) -> Bool {
        installed(compiler(for: isa)) && (emulator(for: isa).map(installed) ?? true)
    }
}
