// swift-tools-version:6.1
// graft: change a running Linux process without restarting it (jump patches, hooks, step traces).
import PackageDescription

let package = Package(
    name: "graft",
    platforms: [.macOS(.v15)],  // Linux is what graft runs on; v15 for Synchronization.Atomic
    products: [
        .library(name: "GraftKit", targets: ["GraftKit"]),
        .executable(name: "graft", targets: ["graft"]),
    ],
    // The CLI's dependencies come with the trait "CLI" (on by default). A program that only uses the
    // GraftKit library asks for `traits: []` and fetches nothing (docs/library.md).
    traits: [.default(enabledTraits: ["CLI"]), .trait(name: "CLI", description: "The graft command (swift-argument-parser).")],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // C: only what Swift cannot import (variadic ptrace, wait macros, gettid, process_vm_*).
        .target(name: "CGraftShim", linkerSettings: [.linkedLibrary("stdc++"), .linkedLibrary("iberty")]),  // __cxa_demangle, rust_demangle
        .systemLibrary(name: "CLibunwind", pkgConfig: "libunwind-ptrace",
                       providers: [.apt(["libunwind-dev"])]),
        .systemLibrary(name: "CCapstone", pkgConfig: "capstone",
                       providers: [.apt(["libcapstone-dev"])]),
        // elfutils' libdw: DWARF for typed hook arguments (GraftELF/DWARFReader.swift).
        .systemLibrary(name: "CLibdw", pkgConfig: "libdw",
                       providers: [.apt(["libdw-dev"])]),
        // libyaml: patch files (graft export/apply), docs/service.md says why YAML.
        .systemLibrary(name: "CYaml", pkgConfig: "yaml-0.1",
                       providers: [.apt(["libyaml-dev"])]),
        // Errors and small shared value types used by every layer.
        .target(name: "GraftCore"),
        // Architectures as data + pure encoders/decoders: bytes in, bytes out.
        .target(name: "GraftMachine", dependencies: ["GraftCore", "CCapstone"]),
        // ELF files, /proc/PID/maps, symbol index, the location grammar. Never touches a process.
        .target(name: "GraftELF", dependencies: ["GraftCore", "CGraftShim", "CLibdw"]),
        // Process control. The ONLY module that calls ptrace/waitpid.
        .target(name: "GraftPtrace", dependencies: ["GraftCore", "CGraftShim"]),
        // The engine: patches + journal, hook sessions, the step tracer, the unwinder. It calls
        // CGraftShim directly for the clock, CPU following and scheduling policies.
        .target(name: "GraftKit", dependencies: ["GraftCore", "GraftMachine", "GraftELF", "GraftPtrace", "CGraftShim", "CLibunwind", "CYaml"]),
        // The CLI: one file per command, no logic of its own.
        .executableTarget(name: "graft", dependencies: [
            "GraftKit", .product(name: "ArgumentParser", package: "swift-argument-parser", condition: .when(traits: ["CLI"])),
        ]),
        // The Swift program shown in docs/library.md, built by `swift build` so the example cannot rot.
        .executableTarget(name: "graft-library-example", dependencies: ["GraftKit"], path: "Examples/LibraryExample"),
        .executableTarget(name: "graft-hook-example", dependencies: ["GraftKit"], path: "Examples/HookExample"),
        .target(name: "TestSupport", dependencies: ["GraftCore"], path: "Tests/TestSupport"),
        .testTarget(name: "GraftMachineTests", dependencies: ["GraftMachine"]),
        .testTarget(name: "GraftELFTests", dependencies: ["GraftELF", "TestSupport"]),
        .testTarget(name: "GraftPtraceTests", dependencies: ["GraftPtrace", "GraftELF", "TestSupport"]),
        .testTarget(name: "GraftKitTests", dependencies: ["GraftKit", "TestSupport"]),
        .testTarget(name: "GraftCLITests", dependencies: ["TestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
