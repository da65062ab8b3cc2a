from pushguard.cli import main

main()
