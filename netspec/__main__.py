from netspec.cli import main

main()
