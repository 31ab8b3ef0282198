from nnkit.cli import main

main()
