"""`python -m dlrunner` == `dlrun`."""
from dlrunner.cli import main

main()
