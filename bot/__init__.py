"""huggingtweets: fine-tune GPT-2 on people's posts and publish the models to the Hugging Face Hub."""

__version__ = "0.1.0"
