from polyport.cli import main

main()
