from memspace.cli import main

main()
