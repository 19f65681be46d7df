from wasmlet.cli import main

main()
