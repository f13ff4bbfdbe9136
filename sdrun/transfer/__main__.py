from sdrun.transfer.cli import main

main()
