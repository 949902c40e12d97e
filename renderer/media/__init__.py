"""What a template's files hold: probing images, videos, audio and fonts, display orientation,
and Lottie documents with the sandbox that draws them (pipeline step 2)."""
