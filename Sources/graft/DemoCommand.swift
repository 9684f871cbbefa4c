import ArgumentParser
struct DemoCommand: ParsableCommand { static let configuration = CommandConfiguration(commandName: "demo", abstract: "A self-contained tour on a bundled victim.") ; func run() throws {} }
