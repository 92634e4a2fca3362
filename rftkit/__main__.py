from rftkit.cli import app

app(prog_name="rftkit")
