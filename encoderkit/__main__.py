from encoderkit.cli import main

main()
