from livecam import create_app

app = create_app()
