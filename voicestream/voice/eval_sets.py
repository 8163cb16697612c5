"""Held-out sentence sets for ``voicestream eval quality`` beyond the codec's own list.

Why a second open-vocabulary set: the corpus's held-out sentences come from the same
template generator as the training text (names, odd noun phrases), and Whisper tiny.en
mishears even the teacher on them (15.6 % WER for Piper itself, 23.8 % through Codec2, on
the shipped voice's 40), so they cannot show a 10 % word error rate.  ``AGENT`` is what a
voice agent says -- confirmations, directions, numbers, questions -- written for this
project and never used in training; the teacher through the codec scores a few percent on it.
"""

from __future__ import annotations

__all__ = ["AGENT"]

AGENT = [
    "Your appointment is confirmed for Thursday at ten in the morning.",
    "I can help you reset your password in just a few steps.",
    "The package should arrive at your door by Friday afternoon.",
    "Would you like me to read the message back to you?",
    "Sorry, I did not catch that. Could you say it again?",
    "Your current balance is forty two dollars and fifty cents.",
    "The restaurant opens at six and closes at eleven tonight.",
    "Please hold while I transfer you to the billing team.",
    "It will be sunny today with a high of seventy degrees.",
    "Take the second exit and follow the signs to the airport.",
    "I have added milk, eggs and bread to your shopping list.",
    "Your flight to Denver is delayed by about thirty minutes.",
    "The meeting has been moved to the small room on the third floor.",
    "Do you want to pay with the card ending in four five one two?",
    "I set a timer for fifteen minutes.",
    "There are three new emails from your manager.",
    "The library closes early on Sunday, so plan your visit before noon.",
    "Thank you for calling, and have a wonderful evening.",
    "Your order number is eight seven three, and it is ready for pickup.",
    "Turn right at the bakery and the bank will be on your left.",
    "I found two hotels near the beach with rooms available tonight.",
    "Remember to take your umbrella because rain is expected later.",
    "The doctor can see you next Tuesday at half past two.",
    "Would you like the vegetarian option or the chicken?",
    "Your subscription renews automatically on the first of every month.",
    "The train to the city leaves from platform four in ten minutes.",
    "I am sorry, but that item is out of stock right now.",
    "Let me check the schedule and get back to you shortly.",
    "Your heart rate was steady during the whole workout.",
    "The lights in the living room are now turned off.",
    "Traffic is heavy on the bridge, so the trip will take longer.",
    "Please enter the six digit code we sent to your phone.",
    "The museum offers free guided tours every Saturday morning.",
    "Your car is due for an oil change in five hundred miles.",
    "I have booked a table for four people at seven thirty.",
    "The pharmacy will have your prescription ready after lunch.",
    "Would you like to hear today's top news stories?",
    "The temperature inside the house is sixty eight degrees.",
    "Your package was left with a neighbor because nobody answered.",
    "I can remind you about this again tomorrow morning.",
    "The concert starts at eight, and the doors open an hour earlier.",
    "Please speak after the tone and press the pound key when you are done.",
    "Your refund of twenty dollars will appear within five business days.",
    "The garden center sells seeds, soil and small fruit trees.",
    "It looks like the printer is out of paper again.",
    "My name is Ava, and I will be your assistant today.",
    "The bus stop is just across the street from the post office.",
    "Your daughter's school called about the field trip next week.",
    "I turned the volume down so it will not wake the baby.",
    "Do you want me to call a taxi for you?",
    "The weekend forecast shows snow in the mountains and rain in the valley.",
    "Your password must contain at least eight characters.",
    "The coffee shop on the corner has a new seasonal menu.",
    "I have sent the invoice to your accountant by email.",
    "Every seat on the morning ferry is already taken.",
    "The kitchen timer went off while you were outside.",
    "Your bike lock code is saved in your notes.",
    "Please bring your passport and a printed copy of the ticket.",
    "The baby monitor shows that the nursery is quiet.",
    "We will start the lesson again from the beginning.",
]
